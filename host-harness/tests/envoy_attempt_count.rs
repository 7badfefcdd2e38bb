//! `steering.attemptCount: responseHeader` on the real Envoy (1.40): with
//! `include_attempt_count_in_response` on the route, the router writes
//! `x-envoy-attempt-count` over whatever the upstream sent, so a lying
//! upstream cannot hide a retry from the filter's attribution.
//! Skips (printing SKIP) when `envoy` is not installed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use host_harness::envoy::config::{FilterModeConfig, Layout, Node, Steering};
use host_harness::envoy::{
    http_get, Behavior, Endpoint, EnvoyOptions, EnvoyProcess, HttpResponse, RetryPolicy, TempDir,
    Upstreams, WasmFilter,
};
use serde_json::json;

mod common;
use common::{labels, require_envoy, wasm};

const T: Duration = Duration::from_secs(5);
const HEADER: &str = "x-locality-failover-hosts";

/// An upstream that answers 200 with `x-envoy-attempt-count: 1`, whatever
/// happened before it: a forged count.
fn forging_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_forged(stream));
        }
    });
    addr
}

fn answer_forged(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        // Requests without a body: the head ends with an empty line.
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-envoy-attempt-count: 1\r\n\r\nforger";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn start(cfg: &FilterModeConfig, dir: &TempDir) -> EnvoyProcess {
    let layout = Layout::new(dir.path());
    EnvoyProcess::start(&layout, &cfg.generate(&layout), &EnvoyOptions::default())
        .unwrap_or_else(|e| panic!("envoy did not start: {e}"))
}

fn get(envoy: &EnvoyProcess, headers: &[(&str, &str)]) -> HttpResponse {
    let listener = envoy.listener().expect("listener");
    http_get(listener, "/", headers, T)
        .unwrap_or_else(|e| panic!("request failed: {e}\n{}", envoy.log_tail(30)))
}

fn attempt_counts(r: &HttpResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == "x-envoy-attempt-count")
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn the_router_writes_the_count_over_the_upstream_value() {
    require_envoy!();
    let ups = Upstreams::start(&["refusing"]).expect("upstreams");
    let forger = forging_upstream();
    let endpoints = vec![
        Endpoint::new("refusing", ups.addr("refusing").expect("addr")),
        Endpoint::new("forger", forger),
    ];
    let mut cfg = FilterModeConfig::new(Steering::override_host(), endpoints);
    cfg.retry = Some(RetryPolicy::new(2, "connect-failure"));
    let dir = TempDir::new("attempts").expect("temp dir");
    let envoy = start(&cfg, &dir);
    ups.set("refusing", Behavior::Refused).expect("refuse");
    let refusing = ups.addr("refusing").expect("addr").to_string();
    // No filter here: the list is the client's, to drive Envoy directly.
    let r = get(&envoy, &[(HEADER, &format!("{refusing},{forger}"))]);
    assert_eq!((r.status, r.text().as_str()), (200, "forger"));
    assert_eq!(attempt_counts(&r), vec!["2"], "one value, Envoy's");
    let r = get(&envoy, &[(HEADER, &forger.to_string())]);
    assert_eq!(attempt_counts(&r), vec!["1"]);
}

#[test]
fn a_retry_behind_a_forging_upstream_still_counts_against_the_first_entry() {
    require_envoy!();
    let ups = Upstreams::start(&["local"]).expect("upstreams");
    let forger = forging_upstream();
    let mut local = Endpoint::new("local", ups.addr("local").expect("addr"));
    local.labels = labels("us-east-1a");
    let mut far = Endpoint::new("far", forger);
    far.labels = labels("us-west-2a");
    let mut cfg = FilterModeConfig::new(Steering::override_host(), vec![local, far]);
    cfg.node = Node::with_labels(labels("us-east-1a"));
    cfg.retry = Some(RetryPolicy::new(2, "connect-failure"));
    let plugin = json!({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"failoverPriority": [
                "topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}},
            "outlierDetection": {"consecutive5xxErrors": 5, "baseEjectionTime": "3m", "maxEjectionPercent": 50}},
        "inventory": {"cluster": cfg.cluster_name},
        "steering": {"mode": "override-host", "maxHosts": 2, "attemptCount": "responseHeader"}
    });
    cfg.wasm = Some(WasmFilter::new(wasm(), plugin.to_string()));
    let dir = TempDir::new("attempts").expect("temp dir");
    let envoy = start(&cfg, &dir);
    assert_eq!(get(&envoy, &[]).text(), "local", "the pick: same zone");
    ups.set("local", Behavior::Refused).expect("refuse");
    // Five retried requests: five failures of `local`, which ejects it.
    for _ in 0..5 {
        let r = get(&envoy, &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "forger"));
        assert_eq!(attempt_counts(&r), vec!["2"]);
    }
    let stat = |name: &str| {
        envoy
            .stat(&format!("wasmcustom.locality_failover.{name}"))
            .unwrap_or(0)
    };
    assert_eq!(stat("retried"), 5);
    assert_eq!(stat("ejections"), 1, "{}", envoy.log_tail(30));
    assert_eq!(
        stat("config_errors"),
        0,
        "the declared cluster is the routed one"
    );
    // `local` is ejected: the pick is `far`, in one attempt.
    let r = get(&envoy, &[]);
    assert_eq!(
        (r.text().as_str(), attempt_counts(&r)),
        ("forger", vec!["1"])
    );
}
