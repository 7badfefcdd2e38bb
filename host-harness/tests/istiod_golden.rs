//! The golden xDS that istiod's own generator produced for the guide's
//! waypoint (`tests/golden/istiod/`, made by `tools/istiod-golden` with
//! `make istiod-golden`), checked without Go:
//!
//! - the golden files were generated from the manifests now in
//!   `envoy/istio/` (FNV-1a 64 hashes in each `meta.json`), and Istio's own
//!   validation accepted them (`validation.json`);
//! - our WasmPlugin and the EnvoyFilter's `stateful_session` sit in the
//!   waypoint's in-ambient HTTP chain where `tests/golden/istiod/README.md`
//!   says, and the plugin's ECDS config is our `pluginConfig`, verbatim;
//! - istiod's EDS priorities equal what our `ranking` computes for the same
//!   objects, endpoint by endpoint (one documented difference: `no-dr`);
//! - the cluster's outlier detection and load-balancing settings are the
//!   DestinationRule's, as our `Policy` reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use locality_failover::config::{LbPolicy, OutlierConfig, RankingRule, Settings};
use locality_failover::inventory::{Inventory, Labels};
use locality_failover::ranking::rank;
use serde::Deserialize;
use serde_json::{json, Value};

/// The guide's cases, `multi-network` (network-region-zone with an
/// east-west gateway for cluster 2) and `authz` (network-region-zone plus an
/// ALLOW AuthorizationPolicy, to see where RBAC sits).
const CASES: [&str; 5] = [
    "no-dr",
    "prefer-close",
    "step6",
    "network-region-zone",
    "authz",
];
const GOLDEN: &str = "tests/golden/istiod";
/// The WasmPlugin's ECDS name: this Istio translates a WasmPlugin into a
/// TrafficExtension.
const PLUGIN_ECDS_NAME: &str =
    "extensions.istio.io/trafficextension/httpbin.locality-failover~istio-translated-wasmplugin";

/// The in-ambient HTTP chain of the waypoint, in order, as istiod generated
/// it with `envoy/istio/waypoint.yaml` applied, with an AuthorizationPolicy
/// (`authz`); the guide's cases have the same without the first filter.
/// README.md next to the golden files shows both lists.
const IN_AMBIENT_CHAIN: &[&str] = &[
    "envoy.filters.http.rbac",
    "envoy.filters.http.grpc_stats",
    "envoy.filters.http.fault",
    "envoy.filters.http.cors",
    PLUGIN_ECDS_NAME,
    "waypoint_upstream_peer_metadata",
    "istio.stats",
    "envoy.filters.http.stateful_session",
    "envoy.filters.http.router",
];

fn root() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&r).unwrap_or(r)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn golden(case: &str, file: &str) -> Value {
    let rel = format!("{GOLDEN}/{case}/{file}");
    serde_json::from_str(&read(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// FNV-1a, 64 bits (the hash `tools/istiod-golden` writes, Go's `hash/fnv`).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn fnv1a64_known_answers() {
    // From the FNV reference test vectors (draft-eastlake-fnv).
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
}

/// Every manifest in envoy/istio/ is the one the golden files were made
/// from: a manifest changed, added or removed without `make istiod-golden`
/// fails here.
#[test]
fn goldens_were_generated_from_the_current_manifests() {
    let mut now = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("envoy/istio")).expect("envoy/istio") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let name = format!(
                "envoy/istio/{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("")
            );
            let data = std::fs::read(&path).expect("read");
            now.insert(name, format!("{:016x}", fnv1a64(&data)));
        }
    }
    assert!(now.contains_key("envoy/istio/waypoint.yaml"));
    for case in CASES {
        let meta = golden(case, "meta.json");
        let recorded: BTreeMap<String, String> =
            serde_json::from_value(meta["fnv1a64"].clone()).expect("fnv1a64 map");
        assert_eq!(
            recorded, now,
            "{case}: envoy/istio/ changed since the golden files were generated; run `make istiod-golden`"
        );
        assert_eq!(meta["fed"], json!(["envoy/istio/waypoint.yaml"]), "{case}");
        assert!(
            s(&meta, "/istio/version").starts_with("v0.0.0-"),
            "{case}: pinned Istio version named"
        );
    }
}

/// Istio's API-server (CRD schema + CEL) and webhook validation accepted
/// every Istio document of every manifest.
#[test]
fn istio_validation_accepts_the_manifests() {
    let v: Value = serde_json::from_str(&read(&format!("{GOLDEN}/validation.json"))).expect("json");
    let docs = v["documents"].as_array().expect("documents");
    let mut kinds = Vec::new();
    for d in docs {
        assert_eq!(d["apiServer"], "ok", "{d}");
        assert_eq!(d["webhook"], "ok", "{d}");
        kinds.push(format!("{} {}", s(d, "/file"), s(d, "/kind")));
    }
    for want in [
        "envoy/istio/waypoint.yaml WasmPlugin",
        "envoy/istio/waypoint.yaml EnvoyFilter",
        "envoy/istio/override-host.yaml WasmPlugin",
        "envoy/istio/override-host.yaml EnvoyFilter",
        "envoy/istio/route-header.yaml WasmPlugin",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} not validated: {kinds:?}"
        );
    }
}

fn cluster_name(case: &str) -> String {
    s(&golden(case, "inputs.json"), "/cluster").to_string()
}

/// The HTTP filters of the waypoint's in-ambient chain (listener
/// `main_internal`, filter chain named after the inbound-vip cluster).
fn in_ambient_http_filters(case: &str) -> Vec<Value> {
    let listeners = golden(case, "listeners.json");
    let name = cluster_name(case);
    let main = listeners
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "main_internal"))
        .unwrap_or_else(|| panic!("{case}: no main_internal listener"));
    let chain = main["filter_chains"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name.as_str()))
        .unwrap_or_else(|| panic!("{case}: no filter chain {name}"));
    let hcm = chain["filters"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        })
        .unwrap_or_else(|| panic!("{case}: no HCM in {name}"));
    hcm.pointer("/typed_config/http_filters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("{case}: no http_filters"))
}

/// Our plugin runs after RBAC (a denied request never reaches it) and the
/// EnvoyFilter's stateful_session sits right before the router, in every
/// case: exactly the chain the README documents.
#[test]
fn plugin_and_stateful_session_sit_where_the_readme_says() {
    let readme = read(&format!("{GOLDEN}/README.md"));
    let without_rbac = &IN_AMBIENT_CHAIN[1..];
    for chain in [IN_AMBIENT_CHAIN, without_rbac] {
        assert!(
            readme.lines().any(|l| l == chain.join(" -> ")),
            "README.md must show the chain: {}",
            chain.join(" -> ")
        );
    }
    for case in CASES {
        let filters = in_ambient_http_filters(case);
        let names: Vec<&str> = filters
            .iter()
            .map(|f| f["name"].as_str().unwrap_or(""))
            .collect();
        let want = if case == "authz" {
            IN_AMBIENT_CHAIN
        } else {
            without_rbac
        };
        assert_eq!(names, want, "{case}");
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or(usize::MAX);
        if case == "authz" {
            assert!(
                pos("envoy.filters.http.rbac") < pos(PLUGIN_ECDS_NAME),
                "{case}"
            );
        }
        assert_eq!(
            pos("envoy.filters.http.stateful_session") + 1,
            pos("envoy.filters.http.router"),
            "{case}"
        );
        assert_eq!(names.last(), Some(&"envoy.filters.http.router"), "{case}");
        // The plugin comes by ECDS; stateful_session is our EnvoyFilter's
        // value, verbatim.
        let plugin = &filters[pos(PLUGIN_ECDS_NAME)];
        assert!(plugin.get("config_discovery").is_some(), "{case}: {plugin}");
        let session = &filters[pos("envoy.filters.http.stateful_session")];
        let mut ours = envoy_filter_value()["typed_config"].clone();
        // `strict: false` is the proto default: absent in istiod's output.
        assert_eq!(ours["strict"], json!(false));
        ours.as_object_mut().map(|o| o.remove("strict"));
        assert_eq!(session["typed_config"], ours, "{case}");
    }
}

fn waypoint_docs() -> Vec<Value> {
    let text = read("envoy/istio/waypoint.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

fn waypoint_doc(kind: &str) -> Value {
    waypoint_docs()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in waypoint.yaml"))
}

fn envoy_filter_value() -> Value {
    waypoint_doc("EnvoyFilter")
        .pointer("/spec/configPatches/0/patch/value")
        .cloned()
        .expect("patch value")
}

/// The ECDS resource istiod sends for the plugin carries our pluginConfig
/// unchanged, FAIL_CLOSE as `failure_policy: FAIL_CLOSED`, and our image.
#[test]
fn ecds_carries_the_plugin_config_verbatim() {
    let plugin = waypoint_doc("WasmPlugin");
    for case in CASES {
        let ecds = golden(case, "ecds.json");
        let ext = ecds
            .as_array()
            .and_then(|e| e.iter().find(|e| e["name"] == PLUGIN_ECDS_NAME))
            .unwrap_or_else(|| panic!("{case}: no ECDS {PLUGIN_ECDS_NAME}"));
        let wasm = ext
            .pointer("/typed_config/config")
            .unwrap_or_else(|| panic!("{case}: {ext}"));
        let config: Value = serde_json::from_str(s(wasm, "/configuration/value"))
            .unwrap_or_else(|e| panic!("{case}: configuration: {e}"));
        assert_eq!(config, plugin["spec"]["pluginConfig"], "{case}");
        assert_eq!(s(wasm, "/failure_policy"), "FAIL_CLOSED", "{case}");
        assert!(wasm.get("fail_open").is_none(), "{case}");
        assert_eq!(
            s(wasm, "/root_id"),
            s(&plugin, "/spec/pluginName"),
            "{case}"
        );
        let url = s(&plugin, "/spec/url").trim_start_matches("oci://");
        assert!(wasm.to_string().contains(url), "{case}: image {url}");
    }
}

/// One host of istiod's EDS for the in-ambient cluster.
#[derive(Debug)]
struct EdsHost {
    zone: String,
    /// The internal listener the waypoint sends it to (`connect_originate`,
    /// or `inner_connect_originate` for the east-west gateway); empty for a
    /// plain socket address.
    listener: String,
    address: String,
    priority: u32,
}

fn istiod_eds(case: &str) -> Vec<EdsHost> {
    let eds = golden(case, "endpoints.json");
    let name = cluster_name(case);
    let cla = eds
        .as_array()
        .and_then(|e| e.iter().find(|c| c["cluster_name"] == name.as_str()))
        .unwrap_or_else(|| panic!("{case}: no EDS for {name}"));
    let mut out = Vec::new();
    for group in cla["endpoints"].as_array().expect("endpoints") {
        let priority = group["priority"].as_u64().unwrap_or(0) as u32;
        for lb in group["lb_endpoints"].as_array().expect("lb_endpoints") {
            let addr = &lb["endpoint"]["address"];
            let (listener, address) = match addr.get("envoy_internal_address") {
                Some(internal) => (
                    s(internal, "/server_listener_name").to_string(),
                    s(internal, "/endpoint_id").to_string(),
                ),
                None => (
                    String::new(),
                    format!(
                        "{}:{}",
                        s(addr, "/socket_address/address"),
                        addr.pointer("/socket_address/port_value")
                            .and_then(Value::as_u64)
                            .unwrap_or(0)
                    ),
                ),
            };
            out.push(EdsHost {
                zone: s(group, "/locality/zone").to_string(),
                listener,
                address,
                priority,
            });
        }
    }
    out
}

fn input_endpoints(case: &str) -> Vec<Value> {
    golden(case, "inputs.json")["endpoints"]
        .as_array()
        .cloned()
        .expect("endpoints")
}

/// istiod's priority for each pod (by name). A pod is found by its zone (one
/// pod per zone): in `multi-network` a cluster-2 pod is the east-west
/// gateway's address, one host per locality.
fn istiod_priorities(case: &str) -> BTreeMap<String, u32> {
    let eds = istiod_eds(case);
    assert_eq!(eds.len(), 4, "{case}: four hosts in istiod's EDS: {eds:?}");
    input_endpoints(case)
        .iter()
        .map(|e| {
            let zone = s(e, "/labels/topology.kubernetes.io~1zone");
            let hosts: Vec<&EdsHost> = eds.iter().filter(|h| h.zone == zone).collect();
            assert_eq!(hosts.len(), 1, "{case}: one host in {zone}: {hosts:?}");
            (s(e, "/name").to_string(), hosts[0].priority)
        })
        .collect()
}

/// How the waypoint reaches each pod: through the `connect_originate`
/// internal listener (HBONE to the pod's ip:port); in `multi-network`, the
/// cluster-2 pods through `inner_connect_originate` to the east-west
/// gateway (double HBONE).
#[test]
fn istiod_reaches_each_pod_as_documented() {
    for case in CASES {
        let eds = istiod_eds(case);
        let gateway = golden(case, "meta.json")["networkGateways"]
            .as_array()
            .and_then(|g| g.first().cloned());
        for e in input_endpoints(case) {
            let zone = s(&e, "/labels/topology.kubernetes.io~1zone");
            let host = eds.iter().find(|h| h.zone == zone).expect("host");
            let remote = s(&e, "/labels/topology.istio.io~1network") != "cluster1-network";
            match (&gateway, remote) {
                (Some(gw), true) => {
                    assert_eq!(host.listener, "inner_connect_originate", "{case}: {host:?}");
                    let want = format!("{}:{}", s(gw, "/Addr"), gw["HBONEPort"]);
                    assert_eq!(host.address, want, "{case}");
                }
                _ => {
                    assert_eq!(host.listener, "connect_originate", "{case}: {host:?}");
                    assert_eq!(host.address, s(&e, "/address"), "{case}");
                }
            }
        }
    }
}

/// Our engine's ranking for a case: the same trafficPolicy and
/// trafficDistribution as the plugin configuration, the same pods as the
/// inventory, the waypoint's labels as the client.
fn our_settings(case: &str, distribution_override: Option<&str>) -> (Settings, Inventory, Labels) {
    let inputs = golden(case, "inputs.json");
    let mut config = json!({
        "inventory": {"source": "config", "endpoints": inputs["endpoints"]},
    });
    if !inputs["trafficPolicy"].is_null() {
        config["trafficPolicy"] = inputs["trafficPolicy"].clone();
    }
    if let Some(td) = distribution_override.or(inputs["trafficDistribution"].as_str()) {
        config["trafficDistribution"] = json!(td);
    }
    let settings = Settings::from_bytes(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let inventory = Inventory::from_json(&inputs["endpoints"]).expect("inventory");
    let client: Labels =
        serde_json::from_value(inputs["proxy"]["labels"].clone()).expect("proxy labels");
    (settings, inventory, client)
}

/// Our priority for each pod (by name).
fn our_priorities(case: &str, distribution_override: Option<&str>) -> BTreeMap<String, u32> {
    let (settings, inventory, client) = our_settings(case, distribution_override);
    let ranking = rank(&settings.policy.ranking, &client, &inventory);
    inventory
        .endpoints()
        .iter()
        .zip(&ranking.priority)
        .map(|(e, p)| (e.name.clone(), p.expect("every endpoint ranked")))
        .collect()
}

const PODS: [&str; 4] = [
    "in-ambient-7d8f9b6c54-abc12", // us-east-1a, cluster1-network
    "in-ambient-7d8f9b6c54-def34", // us-east-1b, cluster1-network
    "in-ambient-8e9f0c7d65-xyz98", // us-west-2a, cluster2-network
    "in-ambient-8e9f0c7d65-uvw56", // us-west-2b, cluster2-network
];

fn by_pod(p: [u32; 4]) -> BTreeMap<String, u32> {
    PODS.iter().map(|n| n.to_string()).zip(p).collect()
}

/// istiod against our engine, priority by priority, for the cases where the
/// same objects mean the same thing to both.
#[test]
fn istiod_priorities_equal_our_ranking() {
    for case in [
        "prefer-close",
        "step6",
        "network-region-zone",
        "multi-network",
        "authz",
    ] {
        assert_eq!(
            istiod_priorities(case),
            our_priorities(case, None),
            "{case}"
        );
    }
    // And what they are, so a change in both at once is seen too.
    assert_eq!(istiod_priorities("prefer-close"), by_pod([0, 1, 2, 2]));
    // The guide's [zone, region]: us-east-1b ranks with us-west-2.
    assert_eq!(istiod_priorities("step6"), by_pod([0, 1, 1, 1]));
    for case in ["network-region-zone", "multi-network", "authz"] {
        assert_eq!(istiod_priorities(case), by_pod([0, 1, 2, 2]), "{case}");
    }
}

/// The documented difference. With no DestinationRule and no traffic
/// distribution, istiod sends the waypoint NO priorities: the mesh default
/// `localityLbSetting` applies failover only with outlier detection
/// (`pilot/pkg/xds/endpoints/endpoint_builder.go`,
/// "Failover should only be enabled when there is an outlier detection";
/// `loadbalancer.go` `ApplyLocalityLoadBalancer` with `enableFailover`
/// false). The guide's "PreferNetwork by default" is ztunnel's L4 behaviour,
/// not the waypoint's. Our filter defaults to PreferNetwork when nothing
/// decides (network first); `trafficDistribution: Any` gives istiod's flat
/// answer.
#[test]
fn no_destination_rule_is_flat_in_istiod_and_prefer_network_in_ours() {
    assert_eq!(istiod_priorities("no-dr"), by_pod([0, 0, 0, 0]));
    let (settings, _, _) = our_settings("no-dr", None);
    assert!(
        matches!(&settings.policy.ranking, RankingRule::FailoverPriority { labels, .. } if labels.len() == 1),
        "ours defaults to PreferNetwork: {:?}",
        settings.policy.ranking
    );
    assert_eq!(our_priorities("no-dr", None), by_pod([0, 0, 1, 1]));
    assert_eq!(
        our_priorities("no-dr", Some("Any")),
        istiod_priorities("no-dr")
    );
}

fn cluster(case: &str) -> Value {
    let name = cluster_name(case);
    golden(case, "clusters.json")
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name.as_str()).cloned())
        .unwrap_or_else(|| panic!("{case}: no cluster {name}"))
}

fn seconds(v: &Value) -> f64 {
    let text = v.as_str().unwrap_or("");
    text.trim_end_matches('s').parse().unwrap_or(f64::NAN)
}

/// The inbound-vip cluster's outlier detection and load-balancing settings
/// are the DestinationRule's, as our Policy reads the same trafficPolicy.
#[test]
fn cluster_settings_match_the_destination_rule() {
    for case in CASES {
        let c = cluster(case);
        // no-dr: compared with `Any`, istiod's meaning there (the default
        // differs, pinned in no_destination_rule_is_flat_in_istiod_...).
        let distribution = (case == "no-dr").then_some("Any");
        let (settings, _, _) = our_settings(case, distribution);
        let policy = &settings.policy;
        // ROUND_ROBIN is the proto default (omitted in JSON); without a
        // DestinationRule Istio's default is LEAST_REQUEST, as ours.
        let envoy_lb = match policy.lb {
            LbPolicy::RoundRobin => "ROUND_ROBIN",
            LbPolicy::LeastRequest => "LEAST_REQUEST",
            LbPolicy::Random => "RANDOM",
        };
        assert_eq!(
            c["lb_policy"].as_str().unwrap_or("ROUND_ROBIN"),
            envoy_lb,
            "{case}"
        );
        let od = &c["outlier_detection"];
        match &policy.outlier {
            None => assert!(od.is_null(), "{case}: {od}"),
            Some(OutlierConfig {
                consecutive_5xx,
                interval,
                base_ejection_time,
                max_ejection_percent,
                enforcing_5xx,
                ..
            }) => {
                assert_eq!(
                    od["consecutive_5xx"],
                    json!(consecutive_5xx),
                    "{case}: {od}"
                );
                assert_eq!(seconds(&od["interval"]), interval.as_secs_f64(), "{case}");
                assert_eq!(
                    seconds(&od["base_ejection_time"]),
                    base_ejection_time.as_secs_f64(),
                    "{case}"
                );
                assert_eq!(
                    od["max_ejection_percent"],
                    json!(max_ejection_percent),
                    "{case}"
                );
                let enforcing = od["enforcing_consecutive_5xx"].as_u64().unwrap_or(100);
                assert_eq!(enforcing == 100, *enforcing_5xx, "{case}: {od}");
            }
        }
        let panic = c
            .pointer("/common_lb_config/healthy_panic_threshold/value")
            .and_then(Value::as_f64);
        if policy.outlier.is_some() {
            // Istio sets the panic threshold from minHealthPercent (0 unset).
            assert_eq!(
                panic.unwrap_or(0.0),
                f64::from(policy.panic_threshold),
                "{case}"
            );
        }
        let weighted = c
            .pointer("/common_lb_config/locality_weighted_lb_config")
            .is_some();
        let ranking = rank(&policy.ranking, &Labels::new(), &Inventory::default());
        assert_eq!(
            weighted, ranking.locality_weighted,
            "{case}: locality_weighted_lb_config"
        );
    }
}
