//! The waypoint-shaped Envoy rendered from istiod's golden xDS
//! (`host_harness::waypoint`): its substitutions are the README's, it
//! validates on Envoy 1.40, and Envoy's own `stateful_session` (where our
//! EnvoyFilter puts it) sends a request to the pod the session header names
//! through the CONNECT tunnel, with live EDS changes. The filter is not in
//! these tests (`tests/e2e.sh` plays the scenarios with it).

#[allow(dead_code)]
mod common;
use common::require_envoy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use host_harness::envoy::config::{Endpoint, Layout, LABEL_REGION, LABEL_ZONE};
use host_harness::envoy::{envoy_binary, EnvoyOptions, EnvoyProcess, HttpConnection, TempDir};
use host_harness::envoy::{UpstreamState, Upstreams};
use host_harness::waypoint::eds::{self, CONNECT_ORIGINATE};
use host_harness::waypoint::golden::{Golden, SERVICE_CLUSTER};
use host_harness::waypoint::render::{self, RenderInput, SUBSTITUTIONS};
use host_harness::waypoint::SESSION_HEADER;
use serde_json::{json, Value};

const CASES: [&str; 5] = [
    "no-dr",
    "prefer-close",
    "step6",
    "network-region-zone",
    "multi-network",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn input<'a>(golden: &'a Golden, layout: &'a Layout, wasm: Option<&'a Path>) -> RenderInput<'a> {
    RenderInput {
        golden,
        layout,
        plugin_config: json!({"trafficDistribution": "PreferClose"}).to_string(),
        wasm,
        admin_port: render::free_port().unwrap(),
        node: json!({"id": "waypoint~test", "cluster": "waypoint"}),
        cluster_policy: json!({"lb_policy": "ROUND_ROBIN"}),
        retry: None,
    }
}

fn readme_ids() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("envoy/waypoint/README.md")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_substitution_is_in_the_readme_and_made() {
    let listed: BTreeSet<String> = SUBSTITUTIONS.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        listed,
        readme_ids(),
        "render.rs SUBSTITUTIONS vs envoy/waypoint/README.md"
    );
    let layout = Layout::new("/nonexistent");
    let wasm = Path::new("/nonexistent/filter.wasm");
    for case in CASES {
        let golden = Golden::load(case).unwrap();
        let made: BTreeSet<String> = render::render(&input(&golden, &layout, Some(wasm)))
            .unwrap()
            .applied
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(made, listed, "{case}: substitutions made");
    }
}

#[test]
fn the_chain_keeps_istiods_order_around_our_filter() {
    let golden = Golden::load("step6").unwrap();
    let layout = Layout::new("/nonexistent");
    let wasm = Path::new("/nonexistent/filter.wasm");
    let r = render::render(&input(&golden, &layout, Some(wasm))).unwrap();
    let listeners = r.bootstrap["static_resources"]["listeners"]
        .as_array()
        .unwrap();
    let mi = listeners
        .iter()
        .find(|l| l["name"] == "main_internal")
        .unwrap();
    let chains = mi["filter_chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    let hcm = chains[0]["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .unwrap();
    let filters: Vec<&str> = hcm["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.grpc_stats",
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "extensions.istio.io/trafficextension/httpbin.locality-failover~istio-translated-wasmplugin",
            "envoy.filters.http.stateful_session",
            "envoy.filters.http.router",
        ]
    );
    let wasm_cfg = &hcm["typed_config"]["http_filters"][3]["typed_config"];
    assert_eq!(wasm_cfg["config"]["root_id"], "locality_failover");
    assert_eq!(wasm_cfg["config"]["failure_policy"], "FAIL_CLOSED");
    assert_eq!(
        wasm_cfg["config"]["vm_config"]["code"]["local"]["filename"],
        "/nonexistent/filter.wasm"
    );
}

fn validate(file: &Path) {
    let out = Command::new(envoy_binary().unwrap())
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK"),
        "{} does not validate:\n{text}",
        file.display()
    );
}

#[test]
fn rendered_configs_validate_on_envoy() {
    require_envoy!();
    let wasm = common::wasm();
    let tmp = TempDir::new("waypoint-validate").unwrap();
    for case in CASES {
        let golden = Golden::load(case).unwrap();
        let layout = Layout::new(tmp.path().join(case));
        let r = render::render(&input(&golden, &layout, Some(&wasm))).unwrap();
        let pods = [pod("a", 2, "us-east-1a", 0)];
        let generated = r.generated(eds::load_assignment(
            SERVICE_CLUSTER,
            &pods,
            &BTreeSet::new(),
        ));
        generated.write(&layout).unwrap();
        validate(&layout.bootstrap());
    }
}

fn pod(name: &str, last: u8, zone: &str, priority: u32) -> Endpoint {
    Endpoint::new(name, SocketAddr::from(([127, 0, 0, last], 8080)))
        .with_label(LABEL_REGION, &zone[..zone.len() - 1])
        .with_label(LABEL_ZONE, zone)
        .with_priority(priority)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Upstreams, Envoy and the work directory of one live test.
struct Live {
    envoy: EnvoyProcess,
    upstreams: Upstreams,
    layout: Layout,
    _dir: TempDir,
}

fn start(names: &[(&str, &str, u32)]) -> Live {
    let just: Vec<&str> = names.iter().map(|(n, _, _)| *n).collect();
    let upstreams = Upstreams::start(&just).unwrap();
    let dir = TempDir::new("waypoint-live").unwrap();
    let layout = Layout::new(dir.path());
    let golden = Golden::load("step6").unwrap();
    let r = render::render(&input(&golden, &layout, None)).unwrap();
    let generated = r.generated(cla(&upstreams, names));
    let envoy = EnvoyProcess::start(&layout, &generated, &EnvoyOptions::default()).unwrap();
    Live {
        envoy,
        upstreams,
        layout,
        _dir: dir,
    }
}

fn cla(upstreams: &Upstreams, names: &[(&str, &str, u32)]) -> Value {
    let pods: Vec<Endpoint> = names
        .iter()
        .map(|(n, zone, p)| {
            Endpoint::new(*n, upstreams.addr(n).unwrap())
                .with_label(LABEL_REGION, &zone[..zone.len() - 1])
                .with_label(LABEL_ZONE, *zone)
                .with_priority(*p)
        })
        .collect();
    eds::load_assignment(SERVICE_CLUSTER, &pods, &BTreeSet::new())
}

impl Live {
    /// Sends `n` requests (with the session header naming `pick`, if any);
    /// returns the answers per pod name and the statuses. One kept-alive
    /// connection (the entry listener is a TCP proxy: a `connection: close`
    /// request can lose its answer to a reset when main_internal's HCM
    /// closes the internal connection).
    fn send(&self, n: usize, pick: Option<&str>) -> (BTreeMap<String, u64>, Vec<u16>) {
        let listener = self.envoy.listener().unwrap();
        let mut conn = HttpConnection::connect(listener, Duration::from_secs(10)).unwrap();
        let header = pick.map(|p| {
            let addr = self.upstreams.addr(p).unwrap().to_string();
            base64(eds::host_name(CONNECT_ORIGINATE, &addr).as_bytes())
        });
        let mut by = BTreeMap::new();
        let mut statuses = Vec::new();
        for _ in 0..n {
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![(SESSION_HEADER, h)])
                .unwrap_or_default();
            let r = conn.get("/", &headers).unwrap();
            statuses.push(r.status);
            if let Some(name) = r.header("x-upstream-name") {
                *by.entry(name.to_string()).or_default() += 1;
            }
        }
        (by, statuses)
    }
}

#[test]
fn stateful_session_steers_through_the_connect_tunnel_and_follows_eds() {
    require_envoy!();
    let pods = [
        ("a", "us-east-1a", 0),
        ("b", "us-east-1b", 0),
        ("c", "us-west-2a", 1),
    ];
    let live = start(&pods);
    // Without the header: the cluster's own LB over priority 0.
    let (by, statuses) = live.send(8, None);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(by.keys().cloned().collect::<Vec<_>>(), ["a", "b"], "{by:?}");
    // The header names c (priority 1): every request goes there, through
    // connect_originate's tunnel and the ztunnel stand-in.
    let (by, _) = live.send(6, Some("c"));
    assert_eq!(by, BTreeMap::from([("c".to_string(), 6)]));
    let tunnels = live
        .envoy
        .stat("http.ztunnel.downstream_rq_total")
        .unwrap_or(0);
    assert!(tunnels >= 1, "no CONNECT reached the ztunnel stand-in");
    // c leaves through EDS: the header names no host any more, and
    // strict: false (the golden EnvoyFilter) falls back to the LB.
    let without_c = cla(&live.upstreams, &pods[..2]);
    let stat = Golden::load("step6").unwrap().stat_name(SERVICE_CLUSTER);
    eds::apply(
        &live.envoy,
        &live.layout,
        &stat,
        &without_c,
        2,
        Duration::from_secs(10),
    )
    .unwrap();
    let (by, statuses) = live.send(6, Some("c"));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(!by.contains_key("c"), "{by:?}");
    // A pod that refuses: the tunnel ends, the client gets a 5xx.
    live.upstreams.set("a", UpstreamState::Refused).unwrap();
    let (_, statuses) = live.send(2, Some("a"));
    assert!(statuses.iter().all(|s| *s >= 500), "{statuses:?}");
}
