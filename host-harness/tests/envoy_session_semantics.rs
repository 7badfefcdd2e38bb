//! What Envoy 1.40's `envoy.filters.http.stateful_session` (header state)
//! does with the host it is given, pinned without the filter (the filter's
//! stateful-session mode relies on each point; README "Steering modes"):
//!
//! - the value is base64 of the host's address; Envoy writes it back on
//!   the response when it picked the host itself;
//! - a healthy host is honoured whatever the cluster's LB policy;
//! - a DRAINING (EDS) host is not honoured: `strict: false` lets the
//!   cluster's balancer choose, `strict: true` answers 503 (as for a host
//!   the cluster does not have);
//! - `override_host_status` listing DRAINING makes Envoy honour it;
//! - a retry leaves the session host (it was already tried).
//!
//! Skips (printing SKIP) when `envoy` is not installed.

use std::time::Duration;

use host_harness::envoy::config::Layout;
use host_harness::envoy::{
    envoy_binary, http_get, EnvoyOptions, EnvoyProcess, TempDir, UpstreamState, Upstreams,
};
use locality_failover::session;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);
const HEADER: &str = "x-session";

fn listener(name: &str, cluster: &str, strict: bool) -> Value {
    json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                "route": {"cluster": cluster, "retry_policy": {"retry_on": "5xx", "num_retries": 1}}}]}]},
            "http_filters": [
                {"name": "envoy.filters.http.stateful_session", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
                    "strict": strict,
                    "session_state": {"name": "envoy.http.stateful_session.header", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState",
                        "name": HEADER}}}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]})
}

/// `ok` (healthy), `bad` (answers 503), `drain` (EDS DRAINING), by the
/// cluster's plain round robin.
fn cluster(name: &str, ups: &Upstreams, statuses: Option<&[&str]>) -> Value {
    let ep = |n: &str, health: &str| {
        let a = ups.addr(n).expect("addr");
        json!({"endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}},
               "health_status": health})
    };
    let mut c = json!({"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            ep("ok", "HEALTHY"), ep("bad", "HEALTHY"), ep("drain", "DRAINING")]}]}});
    if let Some(s) = statuses {
        c["common_lb_config"] = json!({"override_host_status": {"statuses": s}});
    }
    c
}

struct Rig {
    envoy: EnvoyProcess,
    ups: Upstreams,
    _dir: TempDir,
}

fn rig() -> Option<Rig> {
    if envoy_binary().is_none() {
        eprintln!("SKIP: envoy not on PATH");
        return None;
    }
    let ups = Upstreams::start(&["ok", "bad", "drain"]).expect("upstreams");
    ups.set("bad", UpstreamState::Http(503)).expect("set");
    let dir = TempDir::new("session-semantics").expect("temp dir");
    let layout = Layout::new(dir.path());
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [listener("loose", "c_loose", false), listener("strict", "c_strict", true),
                          listener("status", "c_status", false)],
            "clusters": [cluster("c_loose", &ups, None), cluster("c_strict", &ups, None),
                         cluster("c_status", &ups, Some(&["HEALTHY", "DRAINING", "UNHEALTHY"]))]}});
    std::fs::write(layout.bootstrap(), bootstrap.to_string()).expect("bootstrap");
    let envoy = EnvoyProcess::spawn(&layout, &EnvoyOptions::default())
        .unwrap_or_else(|e| panic!("envoy did not start: {e}"));
    Some(Rig {
        envoy,
        ups,
        _dir: dir,
    })
}

impl Rig {
    fn value(&self, name: &str) -> String {
        let mut v = String::new();
        session::encode_into("", &self.ups.addr(name).expect("addr").to_string(), &mut v);
        v
    }

    /// Status and body (the upstream's name) through `listener`.
    fn get(&self, listener: &str, session: Option<&str>) -> (u16, String, Option<String>) {
        let addr = self.envoy.listener_addr(listener).expect("listener");
        let headers: Vec<(&str, &str)> = session.map(|s| vec![(HEADER, s)]).unwrap_or_default();
        let r = http_get(addr, "/", &headers, T).expect("request");
        let back = r.header(HEADER).map(str::to_string);
        (r.status, r.text().trim().to_string(), back)
    }
}

#[test]
fn the_value_is_base64_of_the_host_as_envoy_writes_it_back() {
    let Some(rig) = rig() else { return };
    for _ in 0..6 {
        let (status, body, back) = rig.get("loose", None);
        if status == 200 && body == "ok" {
            assert_eq!(back, Some(rig.value("ok")), "Envoy's own encoding");
            return;
        }
    }
    panic!("round robin never reached `ok`");
}

#[test]
fn a_healthy_session_host_is_honoured() {
    let Some(rig) = rig() else { return };
    let ok = rig.value("ok");
    for listener in ["loose", "strict", "status"] {
        for _ in 0..4 {
            assert_eq!(rig.get(listener, Some(&ok)).1, "ok", "{listener}");
        }
    }
}

#[test]
fn a_draining_session_host_depends_on_strict_and_override_host_status() {
    let Some(rig) = rig() else { return };
    let drain = rig.value("drain");
    for _ in 0..4 {
        let (status, body, _) = rig.get("loose", Some(&drain));
        assert_ne!(body, "drain", "loose: the balancer chooses");
        assert!(status == 200 || body.starts_with("bad"), "{status} {body}");
        let (status, body, _) = rig.get("strict", Some(&drain));
        assert_eq!(status, 503, "strict: {body}");
        assert_eq!(body, "no healthy upstream");
        assert_eq!(
            rig.get("status", Some(&drain)).1,
            "drain",
            "listed status: honoured"
        );
    }
    let unknown = {
        let mut v = String::new();
        session::encode_into("", "127.0.0.1:1", &mut v);
        v
    };
    let (status, _, _) = rig.get("strict", Some(&unknown));
    assert_eq!(status, 503, "strict: a host the cluster does not have");
    let (status, body, _) = rig.get("loose", Some(&unknown));
    assert!(
        status == 200 || body.starts_with("bad"),
        "loose: the balancer chooses"
    );
}

#[test]
fn a_retry_leaves_the_session_host() {
    let Some(rig) = rig() else { return };
    let bad = rig.value("bad");
    rig.ups.reset_counts();
    for _ in 0..3 {
        // First attempt to `bad` (503), the one retry to the balancer,
        // which has `ok` and (already tried) `bad`: a 200 from `ok` or a
        // second 503 from `bad`.
        let (status, body, _) = rig.get("loose", Some(&bad));
        assert!(
            status == 200 && body == "ok" || status == 503,
            "{status} {body}"
        );
    }
    assert_eq!(
        rig.ups.answered("bad") as usize,
        3 + (3 - rig.ups.answered("ok") as usize)
    );
    assert!(
        rig.ups.answered("ok") >= 1,
        "some retry left the session host"
    );
}
