//! What ships beside the filter, checked: the Istio manifests
//! (`envoy/istio/`), the OCI image (`scripts/oci.sh`, `envoy/oci/`), the
//! docker-compose demo against the `make demo` configuration
//! (`envoy/docker-compose.yaml`, `envoy/demo/`), and the `lint` command.
//!
//! Tests that need a built filter (`build/locality_failover.wasm`) or an
//! `envoy` binary print `SKIP` and pass without them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use host_harness::envoy::accesslog::{DOWNSTREAM_FORMAT, UPSTREAM_FORMAT};
use host_harness::envoy::{envoy_binary, TempDir};
use locality_failover::config::{Settings, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use locality_failover::lint::lint_json;
use serde::Deserialize;
use serde_json::{json, Value};

fn root() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&r).unwrap_or(r)
}

/// `a/b/../c` -> `a/c`, without touching the file system (the filter may
/// not be built yet).
fn norm(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file, as JSON values (parsed by a YAML parser,
/// not as text).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: one YAML document expected");
    docs.remove(0)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .collect()
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer}: no string in {v}"))
}

/// The guide's step-6 DestinationRule `trafficPolicy`, with its label order.
fn guide_traffic_policy(order: &[&str]) -> Value {
    json!({
        "loadBalancer": {
            "localityLbSetting": { "enabled": true, "failoverPriority": order },
            "simple": "ROUND_ROBIN"
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m",
            "maxEjectionPercent": 50
        }
    })
}

const GUIDE_ORDER: [&str; 2] = [LABEL_ZONE, LABEL_REGION];
const FIXED_ORDER: [&str; 3] = [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE];

// ---------------------------------------------------------------------------
// Istio manifests.

/// `WasmPlugin.spec` fields of Istio's API, from istio/api
/// `extensions/v1alpha1/wasm.proto` (read at commit 00017fa37746, through the
/// code search tool): `selector` 1, `url` 2, `sha256` 3, `image_pull_policy` 4,
/// `image_pull_secret` 5, `verification_key` 6 (`$hide_from_docs`, not
/// implemented, but part of the schema), `plugin_config` 7, `plugin_name` 8,
/// `phase` 9, `priority` 10, `vm_config` 11, `match` 12, `fail_strategy` 13,
/// `type` 14, `targetRef` 15 (hidden), `targetRefs` 16.
const WASM_PLUGIN_FIELDS: &[&str] = &[
    "selector",
    "targetRef",
    "targetRefs",
    "url",
    "sha256",
    "imagePullPolicy",
    "imagePullSecret",
    "verificationKey",
    "pluginConfig",
    "pluginName",
    "phase",
    "priority",
    "vmConfig",
    "match",
    "failStrategy",
    "type",
];
/// The same proto's enums.
const PHASES: &[&str] = &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"];
const FAIL_STRATEGIES: &[&str] = &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"];
const PULL_POLICIES: &[&str] = &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"];
const PLUGIN_TYPES: &[&str] = &["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"];
/// `istio.type.v1beta1.PolicyTargetReference`.
const TARGET_REF_FIELDS: &[&str] = &["group", "kind", "name", "namespace"];

/// Checks a WasmPlugin against Istio's API (fields, enums and the CRD's
/// validation rules) and the guide's waypoint; returns its pluginConfig.
fn check_wasm_plugin(file: &str, plugin: &Value) -> Value {
    assert_eq!(
        s(plugin, "/apiVersion"),
        "extensions.istio.io/v1alpha1",
        "{file}"
    );
    assert_eq!(s(plugin, "/metadata/namespace"), "httpbin", "{file}");
    assert!(!s(plugin, "/metadata/name").is_empty(), "{file}");
    let spec = plugin
        .get("spec")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{file}: WasmPlugin without spec"));
    for key in spec.keys() {
        assert!(
            WASM_PLUGIN_FIELDS.contains(&key.as_str()),
            "{file}: spec.{key} is not a WasmPlugin field"
        );
    }
    // url: required, scheme oci/http/https/file (none means oci).
    let url = spec.get("url").and_then(Value::as_str).unwrap_or_default();
    assert!(!url.is_empty(), "{file}: spec.url is required");
    if let Some((scheme, _)) = url.split_once("://") {
        assert!(
            ["oci", "http", "https", "file"].contains(&scheme),
            "{file}: url scheme {scheme}"
        );
    }
    assert!(
        url.starts_with("oci://"),
        "{file}: the image is an OCI image"
    );
    if let Some(sha) = spec.get("sha256") {
        let sha = sha.as_str().unwrap_or_default();
        assert!(
            sha.is_empty()
                || (sha.len() == 64
                    && sha
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
            "{file}: sha256 pattern"
        );
    }
    let enum_field = |name: &str, allowed: &[&str]| {
        let v = spec
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{file}: spec.{name} should be set explicitly"));
        assert!(
            allowed.contains(&v),
            "{file}: spec.{name} = {v} not in {allowed:?}"
        );
        v.to_string()
    };
    assert_eq!(enum_field("phase", PHASES), "UNSPECIFIED_PHASE", "{file}");
    assert_eq!(
        enum_field("failStrategy", FAIL_STRATEGIES),
        "FAIL_CLOSE",
        "{file}"
    );
    enum_field("imagePullPolicy", PULL_POLICIES);
    if spec.contains_key("type") {
        assert_eq!(enum_field("type", PLUGIN_TYPES), "HTTP", "{file}");
    }
    if let Some(name) = spec.get("pluginName") {
        let n = name.as_str().unwrap_or_default().len();
        assert!((1..=256).contains(&n), "{file}: pluginName length");
    }
    if let Some(p) = spec.get("priority") {
        assert!(
            p.as_i64().is_some_and(|p| i32::try_from(p).is_ok()),
            "{file}: priority is an int32"
        );
    }
    // CRD rule: only one of selector, targetRef, targetRefs. Waypoints need targetRefs.
    let attachments = ["selector", "targetRef", "targetRefs"]
        .iter()
        .filter(|k| spec.contains_key(**k))
        .count();
    assert_eq!(
        attachments, 1,
        "{file}: exactly one of selector/targetRef/targetRefs"
    );
    let refs = spec
        .get("targetRefs")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{file}: a waypoint needs targetRefs"));
    assert!(refs.len() <= 16, "{file}: targetRefs has at most 16 items");
    for r in refs {
        for key in r.as_object().expect("targetRef object").keys() {
            assert!(
                TARGET_REF_FIELDS.contains(&key.as_str()),
                "{file}: targetRefs[].{key}"
            );
        }
    }
    assert_eq!(
        refs,
        &vec![
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "httpbin-waypoint"})
        ],
        "{file}: the guide's waypoint"
    );
    let config = spec
        .get("pluginConfig")
        .cloned()
        .unwrap_or_else(|| panic!("{file}: no pluginConfig"));
    assert!(config.is_object(), "{file}: pluginConfig is a Struct");
    config
}

/// Validates a pluginConfig as the filter does at configure time (Istio
/// hands it over as JSON) and lints it: no warning. Checks that it carries
/// the guide's step-6 trafficPolicy with the [network, region, zone] order,
/// and that the guide's own order would have been flagged.
fn check_plugin_config(file: &str, config: &Value) -> Settings {
    let bytes = serde_json::to_vec(config).expect("json");
    let settings = Settings::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{file}: the filter refuses the pluginConfig: {e}"));
    let findings = lint_json(config).unwrap_or_else(|e| panic!("{file}: lint: {e}"));
    assert!(
        findings.is_empty(),
        "{file}: unexpected lint warnings: {findings:?}"
    );
    assert_eq!(
        config.get("trafficPolicy"),
        Some(&guide_traffic_policy(&FIXED_ORDER)),
        "{file}: the guide's step-6 trafficPolicy with failoverPriority [network, region, zone]"
    );
    let mut as_in_guide = config.clone();
    as_in_guide["trafficPolicy"] = guide_traffic_policy(&GUIDE_ORDER);
    let findings = lint_json(&as_in_guide).expect("lint");
    assert!(
        findings.iter().any(|f| f.message.contains("comes before")),
        "{file}: the guide's [zone, region] should be flagged: {findings:?}"
    );
    // The comment explaining the pitfall is there.
    let text = read(file);
    assert!(
        text.contains("[topology.kubernetes.io/zone, topology.kubernetes.io/region]")
            && text.contains("[network, region, zone]"),
        "{file}: the [zone, region] pitfall comment"
    );
    settings
}

#[test]
fn istio_route_header_manifests() {
    let file = "envoy/istio/route-header.yaml";
    let docs = yaml_docs(file);
    let plugins = kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1, "{file}");
    let config = check_wasm_plugin(file, plugins[0]);
    check_plugin_config(file, &config);
    assert_eq!(s(&config, "/steering/mode"), "route-header");
    let header = s(&config, "/steering/header").to_string();
    assert_eq!(s(&config, "/inventory/source"), "config");

    // backend -> zones of its endpoints
    let mut backends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in config
        .pointer("/inventory/endpoints")
        .and_then(Value::as_array)
        .expect("endpoints")
    {
        backends
            .entry(s(e, "/backend").to_string())
            .or_default()
            .insert(s(e, "/labels/topology.kubernetes.io~1zone").to_string());
    }
    assert_eq!(backends.len(), 4, "one backend per locality of the guide");

    let routes = kind(&docs, "HTTPRoute");
    assert_eq!(routes.len(), 1, "{file}");
    let route = routes[0];
    assert_eq!(s(route, "/apiVersion"), "gateway.networking.k8s.io/v1");
    assert_eq!(s(route, "/metadata/namespace"), "httpbin");
    assert_eq!(
        route.pointer("/spec/parentRefs"),
        Some(&json!([{"group": "", "kind": "Service", "name": "in-ambient", "port": 8000}])),
        "waypoint routes attach to the Service"
    );
    let rules = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .expect("rules");
    let mut routed = BTreeMap::new();
    let mut default_rule = None;
    for r in rules {
        let refs = r
            .get("backendRefs")
            .and_then(Value::as_array)
            .expect("backendRefs");
        assert_eq!(refs.len(), 1);
        let target = s(&refs[0], "/name").to_string();
        assert_eq!(refs[0].get("port"), Some(&json!(8000)));
        match r.get("matches").and_then(Value::as_array) {
            Some(m) => {
                assert_eq!(m.len(), 1);
                let h = m[0]
                    .get("headers")
                    .and_then(Value::as_array)
                    .expect("header match");
                assert_eq!(h.len(), 1);
                assert_eq!(s(&h[0], "/name"), header, "the filter's header");
                assert_eq!(
                    h[0].get("type").and_then(Value::as_str).unwrap_or("Exact"),
                    "Exact"
                );
                routed.insert(s(&h[0], "/value").to_string(), target);
            }
            None => default_rule = Some(target),
        }
    }
    assert_eq!(
        default_rule.as_deref(),
        Some("in-ambient"),
        "a request without the header"
    );
    let expected: BTreeMap<String, String> =
        backends.keys().map(|b| (b.clone(), b.clone())).collect();
    assert_eq!(
        routed, expected,
        "each backend value routes to the Service of that name"
    );

    let services = kind(&docs, "Service");
    for (backend, zones) in &backends {
        let svc = services
            .iter()
            .find(|svc| s(svc, "/metadata/name") == backend)
            .unwrap_or_else(|| panic!("no Service {backend}"));
        assert_eq!(s(svc, "/apiVersion"), "v1");
        assert_eq!(s(svc, "/metadata/namespace"), "httpbin");
        assert_eq!(zones.len(), 1, "{backend}: one zone");
        let zone = zones.iter().next().expect("zone");
        assert_eq!(
            s(svc, "/spec/selector/topology.kubernetes.io~1zone"),
            zone,
            "{backend}"
        );
        assert_eq!(s(svc, "/spec/selector/app"), "in-ambient", "{backend}");
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .expect("ports");
        assert!(
            ports.iter().any(|p| p.get("port") == Some(&json!(8000))),
            "{backend}: port 8000"
        );
    }
    assert_eq!(services.len(), backends.len(), "no stray Service");
}

/// Merges `patch` into `base` as an EnvoyFilter MERGE does for these fields.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// `envoy --mode validate` on a bootstrap with one static cluster.
fn envoy_validates_cluster(cluster: &Value) -> Option<Output> {
    let envoy = envoy_binary()?;
    let dir = TempDir::new("shipping").expect("temp dir");
    let path = dir.path().join("bootstrap.json");
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"clusters": [cluster]}
    });
    std::fs::write(&path, bootstrap.to_string()).expect("write");
    Some(
        Command::new(envoy)
            .args(["--mode", "validate", "-l", "error", "-c"])
            .arg(&path)
            .output()
            .expect("run envoy"),
    )
}

/// The main waypoint install: the WasmPlugin (stateful-session steering,
/// inventory from the waypoint's own Envoy) and the EnvoyFilter that inserts
/// Envoy's `stateful_session` before the router. Where istiod really puts
/// both is checked on its own output in `tests/istiod_golden.rs`.
#[test]
fn istio_waypoint_manifests() {
    let file = "envoy/istio/waypoint.yaml";
    let docs = yaml_docs(file);
    assert_eq!(docs.len(), 2, "{file}: a WasmPlugin and an EnvoyFilter");
    let plugins = kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1, "{file}");
    let config = check_wasm_plugin(file, plugins[0]);
    assert_eq!(s(&config, "/steering/mode"), "stateful-session");
    assert_eq!(s(&config, "/inventory/source"), "envoy");
    let header = s(&config, "/steering/header").to_string();

    let filters = kind(&docs, "EnvoyFilter");
    assert_eq!(filters.len(), 1, "{file}");
    let ef = filters[0];
    assert_eq!(s(ef, "/apiVersion"), "networking.istio.io/v1alpha3");
    assert_eq!(s(ef, "/metadata/namespace"), "httpbin");
    assert_eq!(
        ef.pointer("/spec/targetRefs"),
        Some(
            &json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "httpbin-waypoint"}])
        )
    );
    let patches = ef
        .pointer("/spec/configPatches")
        .and_then(Value::as_array)
        .expect("patches");
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(s(p, "/applyTo"), "HTTP_FILTER");
    assert_eq!(s(p, "/match/context"), "SIDECAR_INBOUND");
    assert_eq!(s(p, "/match/listener/name"), "main_internal");
    assert_eq!(
        s(p, "/match/listener/filterChain/filter/name"),
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(
        s(p, "/match/listener/filterChain/filter/subFilter/name"),
        "envoy.filters.http.router"
    );
    assert_eq!(s(p, "/patch/operation"), "INSERT_BEFORE");
    let value = p.pointer("/patch/value").expect("patch value");
    assert_eq!(s(value, "/name"), "envoy.filters.http.stateful_session");
    assert_eq!(
        s(value, "/typed_config/session_state/name"),
        "envoy.http.stateful_session.header"
    );
    assert_eq!(
        s(value, "/typed_config/session_state/typed_config/name"),
        header,
        "stateful_session reads the header the filter writes"
    );
    assert_eq!(value.pointer("/typed_config/strict"), Some(&json!(false)));

    // Last: the filter's own validator and lint on the pluginConfig.
    check_plugin_config(file, &config);
}

#[test]
fn istio_override_host_manifests() {
    let file = "envoy/istio/override-host.yaml";
    let docs = yaml_docs(file);
    let plugins = kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 1, "{file}");
    let config = check_wasm_plugin(file, plugins[0]);
    let settings = check_plugin_config(file, &config);
    assert_eq!(s(&config, "/steering/mode"), "override-host");
    assert_eq!(
        settings.steering.address_prefix,
        "envoy://connect_originate/"
    );
    let header = settings.steering.header.clone();

    let filters = kind(&docs, "EnvoyFilter");
    assert_eq!(filters.len(), 1, "{file}");
    let ef = filters[0];
    assert_eq!(s(ef, "/apiVersion"), "networking.istio.io/v1alpha3");
    assert_eq!(s(ef, "/metadata/namespace"), "httpbin");
    assert_eq!(
        ef.pointer("/spec/targetRefs"),
        Some(
            &json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "httpbin-waypoint"}])
        )
    );
    let patches = ef
        .pointer("/spec/configPatches")
        .and_then(Value::as_array)
        .expect("patches");
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(s(p, "/applyTo"), "CLUSTER");
    assert_eq!(s(p, "/match/context"), "SIDECAR_INBOUND");
    assert_eq!(
        s(p, "/match/cluster/name"),
        "inbound-vip|8000|http|in-ambient.httpbin.mesh.internal",
        "the waypoint's cluster for the guide's global service"
    );
    assert_eq!(s(p, "/patch/operation"), "MERGE");
    let value = p.pointer("/patch/value").expect("patch value");
    let policy = value
        .pointer("/load_balancing_policy/policies/0/typed_extension_config")
        .expect("load_balancing_policy");
    assert_eq!(
        s(policy, "/name"),
        "envoy.load_balancing_policies.override_host"
    );
    assert_eq!(
        s(policy, "/typed_config/override_host_sources/0/header"),
        header,
        "override_host reads the header the filter writes"
    );
    assert!(
        policy
            .pointer("/typed_config/fallback_policy/policies/0")
            .is_some(),
        "fallback policy"
    );

    // The patched cluster, as Istio would build it for the waypoint (EDS in
    // reality; STATIC here so that validation needs no xDS server).
    let mut cluster = json!({
        "name": "inbound-vip|8000|http|in-ambient.httpbin.mesh.internal",
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "outlier_detection": {"consecutive_5xx": 5, "interval": "10s", "base_ejection_time": "180s", "max_ejection_percent": 50},
        "common_lb_config": {"healthy_panic_threshold": {}},
        "load_assignment": {"cluster_name": "in-ambient", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "10.10.0.15", "port_value": 8080}}}}
        ]}]}
    });
    merge(&mut cluster, value);
    let Some(out) = envoy_validates_cluster(&cluster) else {
        eprintln!("SKIP: envoy not on PATH: the merged cluster was not validated by Envoy");
        return;
    };
    assert!(
        out.status.success(),
        "Envoy refuses the patched cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the guide's DestinationRule (localityLbSetting) Istio also sets
    // locality_weighted_lb_config, which Envoy refuses next to a
    // load_balancing_policy: the manifest says so.
    cluster["common_lb_config"]["locality_weighted_lb_config"] = json!({});
    let out = envoy_validates_cluster(&cluster).expect("envoy");
    assert!(
        !out.status.success(),
        "expected Envoy to refuse locality_weighted_lb_config + load_balancing_policy"
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("locality_weighted_lb_config"), "{log}");
    assert!(
        read(file).contains("cannot be combined with partial fields"),
        "{file}: documents it"
    );
}

// ---------------------------------------------------------------------------
// OCI image.

/// SHA-256 (FIPS 180-4), hex: the test computes digests itself rather than
/// trusting the script's sha256sum.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [v[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6]];
            v[0] = t1.wrapping_add(t2);
            v[4] = v[4].wrapping_add(t1);
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_known_answers() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(&[b'a'; 1000]),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

/// One regular file of a tar archive (ustar / GNU).
fn tar_files(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let field = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).trim().to_string()
    };
    let mut files = BTreeMap::new();
    let mut off = 0;
    while off + 512 <= data.len() {
        let h = &data[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let stored: u32 = u32::from_str_radix(&field(&h[148..156]), 8).expect("checksum");
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        assert_eq!(stored, sum, "tar header checksum");
        let mut name = field(&h[0..100]);
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = usize::from_str_radix(&field(&h[124..136]), 8).expect("size");
        let typeflag = h[156];
        off += 512;
        match typeflag {
            b'0' | 0 => {
                assert!(off + size <= data.len(), "truncated tar");
                files.insert(
                    name.trim_start_matches("./").to_string(),
                    data[off..off + size].to_vec(),
                );
            }
            b'5' => {}
            other => panic!("unexpected tar entry type {:?} for {name}", other as char),
        }
        off += size.div_ceil(512) * 512;
    }
    files
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip -dc");
    writer.join().expect("writer").expect("write to gzip");
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn oci_dockerfile_is_one_copy_onto_scratch() {
    let text = read("envoy/oci/Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        lines,
        ["FROM scratch", "COPY locality_failover.wasm ./plugin.wasm"]
    );
}

#[test]
fn oci_image_layout_and_archive() {
    let wasm_path = root().join("build/locality_failover.wasm");
    let Ok(wasm) = std::fs::read(&wasm_path) else {
        eprintln!(
            "SKIP: {} not built (make build): OCI packaging not checked",
            wasm_path.display()
        );
        return;
    };
    if !["tar", "gzip", "sha256sum"].iter().all(|t| have(t)) {
        eprintln!("SKIP: tar, gzip or sha256sum missing");
        return;
    }
    let dir = TempDir::new("oci").expect("temp dir");
    let out = Command::new("bash")
        .arg(root().join("scripts/oci.sh"))
        .env("OCI_OUT", dir.path())
        .output()
        .expect("run scripts/oci.sh");
    assert!(
        out.status.success(),
        "scripts/oci.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = dir.path().join("oci");
    let file = |rel: &str| std::fs::read(layout.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let json_of = |bytes: &[u8]| -> Value { serde_json::from_slice(bytes).expect("json") };
    let blob = |descriptor: &Value, media_type: &str| -> Vec<u8> {
        assert_eq!(s(descriptor, "/mediaType"), media_type);
        let digest = s(descriptor, "/digest");
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let bytes = file(&format!("blobs/sha256/{hex}"));
        assert_eq!(sha256_hex(&bytes), hex, "digest of {media_type}");
        assert_eq!(
            descriptor.get("size").and_then(Value::as_u64),
            Some(bytes.len() as u64),
            "size of {media_type}"
        );
        bytes
    };

    assert_eq!(
        json_of(&file("oci-layout")),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json_of(&file("index.json"));
    assert_eq!(index.get("schemaVersion"), Some(&json!(2)));
    assert_eq!(
        s(&index, "/mediaType"),
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .expect("manifests");
    assert_eq!(manifests.len(), 1);
    assert!(
        !s(
            &manifests[0],
            "/annotations/org.opencontainers.image.ref.name"
        )
        .is_empty(),
        "a tag"
    );
    let manifest = json_of(&blob(
        &manifests[0],
        "application/vnd.oci.image.manifest.v1+json",
    ));
    assert_eq!(manifest.get("schemaVersion"), Some(&json!(2)));
    assert_eq!(
        s(&manifest, "/mediaType"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json_of(&blob(
        manifest.get("config").expect("config"),
        "application/vnd.oci.image.config.v1+json",
    ));
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .expect("layers");
    assert_eq!(layers.len(), 1, "one layer, as FROM scratch + one COPY");
    // Istio's image fetcher takes the last layer of this media type and
    // extracts the file named plugin.wasm from it.
    let layer_gz = blob(&layers[0], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layer_tar = gunzip(&layer_gz);
    assert_eq!(
        config.pointer("/rootfs"),
        Some(
            &json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer_tar))]})
        ),
        "config.rootfs.diff_ids = the uncompressed layer's digest"
    );
    assert!(config.get("architecture").is_some() && config.get("os").is_some());
    let files = tar_files(&layer_tar);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["plugin.wasm"],
        "the layer holds plugin.wasm only"
    );
    assert!(
        files["plugin.wasm"] == wasm,
        "plugin.wasm differs from build/locality_failover.wasm"
    );

    // Nothing else in the blob store.
    let referenced: BTreeSet<String> = [
        &manifests[0],
        manifest.get("config").expect("config"),
        &layers[0],
    ]
    .iter()
    .map(|d| s(d, "/digest").trim_start_matches("sha256:").to_string())
    .collect();
    let stored: BTreeSet<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        stored, referenced,
        "blobs/sha256 holds exactly the referenced blobs"
    );

    // The archive: the same layout, files at the top level (oci-archive).
    let archive =
        tar_files(&std::fs::read(dir.path().join("locality-failover-oci.tar")).expect("archive"));
    let mut expected: BTreeSet<String> = ["oci-layout", "index.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.extend(stored.iter().map(|d| format!("blobs/sha256/{d}")));
    assert_eq!(archive.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (name, bytes) in &archive {
        assert!(
            *bytes == file(name),
            "{name} differs between the archive and the layout"
        );
    }

    // Reproducible: the same .wasm gives the same manifest digest.
    let again = TempDir::new("oci").expect("temp dir");
    let out = Command::new("bash")
        .arg(root().join("scripts/oci.sh"))
        .env("OCI_OUT", again.path())
        .output()
        .expect("run scripts/oci.sh");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(again.path().join("oci/index.json")).expect("index"),
        file("index.json"),
        "the image is reproducible"
    );
}

// ---------------------------------------------------------------------------
// docker-compose and the `make demo` configuration.

/// A file in JSON syntax with `#` comment lines, read as the demo reads it.
fn commented_json(rel: &str) -> Value {
    let text = read(rel);
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn describe_demo() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--describe")
        .arg("--config-dir")
        .arg(root().join("envoy/demo"))
        .output()
        .expect("run demo --describe");
    assert!(
        out.status.success(),
        "demo --describe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("describe output")
}

/// Host path (canonical) behind a container path, through `volumes`.
fn host_path(compose_dir: &Path, volumes: &[String], container: &str) -> Option<PathBuf> {
    volumes.iter().find_map(|v| {
        let mut parts = v.split(':');
        let (src, dst) = (parts.next()?, parts.next()?);
        let rest = container.strip_prefix(dst)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(norm(
            &compose_dir.join(src).join(rest.trim_start_matches('/')),
        ))
    })
}

#[test]
fn demo_files_are_yaml_and_json_alike() {
    for rel in ["envoy/demo/envoy.yaml", "envoy/demo/cds.yaml"] {
        assert_eq!(
            yaml(rel),
            commented_json(rel),
            "{rel}: YAML and the demo's JSON reading differ"
        );
    }
    let bootstrap = yaml("envoy/demo/envoy.yaml");
    // The demo counts attempts from these access logs.
    let text = bootstrap.to_string();
    assert!(
        text.contains(&serde_json::to_string(UPSTREAM_FORMAT).expect("json")),
        "upstream_log format"
    );
    assert!(
        text.contains(&serde_json::to_string(DOWNSTREAM_FORMAT).expect("json")),
        "access_log format"
    );
}

#[test]
fn docker_compose_runs_the_demo_configuration() {
    let compose_dir = root().join("envoy");
    let compose = yaml("envoy/docker-compose.yaml");
    let describe = describe_demo();
    let envoy = compose.pointer("/services/envoy").expect("services.envoy");
    assert_eq!(s(envoy, "/image"), "envoyproxy/envoy:v1.40-latest");
    let volumes: Vec<String> = envoy
        .get("volumes")
        .and_then(Value::as_array)
        .expect("volumes")
        .iter()
        .map(|v| v.as_str().expect("short volume syntax").to_string())
        .collect();
    let command: Vec<&str> = envoy
        .get("command")
        .and_then(Value::as_array)
        .expect("command")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    let config = command
        .iter()
        .position(|a| *a == "-c" || *a == "--config-path")
        .and_then(|i| command.get(i + 1))
        .expect("envoy -c");

    // The same files: compose's config path, through its volumes, is the
    // file `make demo` reads; so are the CDS file and the filter.
    let canon = |rel: &str| norm(&root().join(rel));
    assert_eq!(
        host_path(&compose_dir, &volumes, config),
        Some(canon("envoy/demo/envoy.yaml"))
    );
    assert_eq!(
        PathBuf::from(s(&describe, "/bootstrap")),
        canon("envoy/demo/envoy.yaml")
    );
    assert_eq!(
        PathBuf::from(s(&describe, "/cds")),
        canon("envoy/demo/cds.yaml")
    );
    let bootstrap = yaml("envoy/demo/envoy.yaml");
    let cds_in_config = s(
        &bootstrap,
        "/dynamic_resources/cds_config/path_config_source/path",
    );
    let watched = s(
        &bootstrap,
        "/dynamic_resources/cds_config/path_config_source/watched_directory/path",
    );
    assert_eq!(cds_in_config, s(&describe, "/substituted/cds_path"));
    assert_eq!(watched, s(&describe, "/substituted/watched_directory"));
    assert_eq!(
        host_path(&compose_dir, &volumes, cds_in_config),
        Some(canon("envoy/demo/cds.yaml"))
    );
    assert_eq!(
        host_path(&compose_dir, &volumes, watched),
        Some(canon("envoy/demo"))
    );
    let wasm_in_config = s(&describe, "/substituted/wasm");
    assert!(bootstrap
        .to_string()
        .contains(&format!("\"filename\":\"{wasm_in_config}\"")));
    let wasm_host =
        host_path(&compose_dir, &volumes, wasm_in_config).expect("the filter is mounted");
    assert_eq!(
        wasm_host,
        canon("build/locality_failover.wasm"),
        "make build's output"
    );

    // Ports: every listener and the admin interface published as themselves.
    let published: BTreeSet<u64> = envoy
        .get("ports")
        .and_then(Value::as_array)
        .expect("ports")
        .iter()
        .map(|p| {
            let p = p.as_str().expect("\"ip:host:container\"");
            let parts: Vec<&str> = p.split(':').collect();
            let (host, container) = (parts[parts.len() - 2], parts[parts.len() - 1]);
            assert_eq!(host, container, "{p}: the same port outside");
            container.parse().expect("port")
        })
        .collect();
    let mut wanted: BTreeSet<u64> = describe
        .get("listeners")
        .and_then(Value::as_array)
        .expect("listeners")
        .iter()
        .map(|l| l.get("port").and_then(Value::as_u64).expect("port"))
        .collect();
    wanted.insert(
        describe
            .get("admin_port")
            .and_then(Value::as_u64)
            .expect("admin port"),
    );
    assert_eq!(published, wanted);
    for l in bootstrap
        .pointer("/static_resources/listeners")
        .and_then(Value::as_array)
        .expect("listeners")
    {
        assert_eq!(
            s(l, "/address/socket_address/address"),
            "0.0.0.0",
            "reachable through the port mapping"
        );
    }

    // Pods: one service per pod, at the pod's address, answering with its
    // name, on the network its labels name, with its labels.
    let services = compose
        .get("services")
        .and_then(Value::as_object)
        .expect("services");
    let networks = compose
        .get("networks")
        .and_then(Value::as_object)
        .expect("networks");
    let envoy_networks: BTreeSet<&str> = envoy
        .get("networks")
        .and_then(Value::as_array)
        .expect("envoy networks")
        .iter()
        .map(|n| n.as_str().expect("name"))
        .collect();
    let pods = describe
        .get("pods")
        .and_then(Value::as_array)
        .expect("pods");
    assert_eq!(pods.len(), 4);
    for pod in pods {
        let name = s(pod, "/name");
        let (ip, port) = s(pod, "/address").split_once(':').expect("ip:port");
        let svc = services
            .get(name)
            .unwrap_or_else(|| panic!("no compose service {name}"));
        let net_label = s(pod, "/labels/topology.istio.io~1network");
        let nets = svc
            .get("networks")
            .and_then(Value::as_object)
            .expect("networks with addresses");
        assert_eq!(
            nets.keys().collect::<Vec<_>>(),
            [net_label],
            "{name}: on its network"
        );
        assert_eq!(s(&nets[net_label], "/ipv4_address"), ip, "{name}");
        assert!(
            envoy_networks.contains(net_label),
            "envoy reaches {net_label}"
        );
        let subnet = s(&networks[net_label], "/ipam/config/0/subnet");
        assert!(in_subnet(ip, subnet), "{name}: {ip} in {subnet}");
        let cmd: Vec<&str> = svc
            .get("command")
            .and_then(Value::as_array)
            .expect("command")
            .iter()
            .map(|v| v.as_str().expect("string"))
            .collect();
        assert!(
            cmd.contains(&format!("-listen=:{port}").as_str()),
            "{name} listens on {port}"
        );
        assert!(
            cmd.contains(&format!("-text={name}").as_str()),
            "{name} answers its name"
        );
        assert_eq!(svc.get("labels"), pod.get("labels"), "{name}: labels");
        assert!(
            svc.get("depends_on").is_none()
                && envoy
                    .get("depends_on")
                    .is_some_and(|d| d.to_string().contains(name)),
            "envoy starts after {name}"
        );
    }
    assert_eq!(
        services.len(),
        pods.len() + 1,
        "envoy and the pods, nothing else"
    );

    // Plugin configuration per listener: valid; only the guide's own
    // [zone, region] listener draws the warning.
    for l in describe
        .get("listeners")
        .and_then(Value::as_array)
        .expect("listeners")
    {
        let name = s(l, "/name");
        let config: Value =
            serde_json::from_str(s(l, "/plugin_config")).expect("plugin config JSON");
        Settings::from_bytes(s(l, "/plugin_config").as_bytes())
            .unwrap_or_else(|e| panic!("{name}: the filter refuses its configuration: {e}"));
        let findings = lint_json(&config).expect("lint");
        if name == "step6-zone-region" {
            assert_eq!(findings.len(), 1, "{name}: {findings:?}");
            assert!(findings[0].message.contains("comes before"), "{findings:?}");
        } else {
            assert!(findings.is_empty(), "{name}: {findings:?}");
        }
    }
}

fn in_subnet(ip: &str, cidr: &str) -> bool {
    let parse = |a: &str| -> u32 {
        a.split('.')
            .map(|o| o.parse::<u32>().expect("octet"))
            .fold(0, |acc, o| (acc << 8) | o)
    };
    let (net, bits) = cidr.split_once('/').expect("cidr");
    let bits: u32 = bits.parse().expect("prefix length");
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    parse(ip) & mask == parse(net) & mask
}

#[test]
fn demo_bootstrap_passes_envoy_validation() {
    let Some(envoy) = envoy_binary() else {
        eprintln!("SKIP: envoy not on PATH");
        return;
    };
    let wasm = root().join("build/locality_failover.wasm");
    if !wasm.is_file() {
        eprintln!(
            "SKIP: {} not built (Envoy validation loads the module)",
            wasm.display()
        );
        return;
    }
    // The compose paths, pointed at this checkout (as the demo does).
    let dir = TempDir::new("demo-validate").expect("temp dir");
    let text = read("envoy/demo/envoy.yaml")
        .replace("/etc/envoy/locality_failover.wasm", &wasm.to_string_lossy())
        .replace("/etc/envoy/demo", &dir.path().to_string_lossy());
    std::fs::write(dir.path().join("envoy.yaml"), text).expect("write");
    std::fs::copy(
        root().join("envoy/demo/cds.yaml"),
        dir.path().join("cds.yaml"),
    )
    .expect("copy");
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(dir.path().join("envoy.yaml"))
        .output()
        .expect("envoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // validate does not read the CDS file: check the cluster as a static one.
    let mut cluster = commented_json("envoy/demo/cds.yaml")["resources"][0].clone();
    cluster.as_object_mut().expect("cluster").remove("@type");
    let out = envoy_validates_cluster(&cluster).expect("envoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// `host-harness lint`.

struct Lint {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lint(config: &str) -> Lint {
    let dir = TempDir::new("lint").expect("temp dir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .arg("lint")
        .arg(&path)
        .output()
        .expect("run host-harness lint");
    Lint {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn warnings(l: &Lint) -> Vec<&str> {
    l.stdout
        .lines()
        .filter(|line| line.contains(": warning: "))
        .collect()
}

fn four_pods() -> Value {
    json!([
        {"address": "10.10.0.15:8080", "name": "in-ambient-7d8f9b6c54-abc12"},
        {"address": "10.10.1.8:8080", "name": "in-ambient-7d8f9b6c54-def34"},
        {"address": "10.20.0.7:8080", "name": "in-ambient-8e9f0c7d65-xyz98"},
        {"address": "10.20.1.4:8080", "name": "in-ambient-8e9f0c7d65-uvw56"}
    ])
}

#[test]
fn lint_warns_about_the_guides_zone_region_order() {
    let l = lint(&json!({"trafficPolicy": guide_traffic_policy(&GUIDE_ORDER)}).to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("trafficPolicy.loadBalancer.localityLbSetting.failoverPriority"),
        "{w:?}"
    );
    assert!(
        w[0].contains("topology.kubernetes.io/zone comes before topology.kubernetes.io/region"),
        "{w:?}"
    );
    assert!(
        w[0].contains("[topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone]"),
        "suggests the fix: {w:?}"
    );

    let fixed = lint(&json!({"trafficPolicy": guide_traffic_policy(&FIXED_ORDER)}).to_string());
    assert_eq!(fixed.code, 0, "{}{}", fixed.stdout, fixed.stderr);
    assert!(
        fixed.stdout.trim_end().ends_with(": ok"),
        "{}",
        fixed.stdout
    );
}

#[test]
fn lint_warns_about_failover_without_outlier_detection() {
    let config = json!({"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {
        "enabled": true, "failoverPriority": FIXED_ORDER}}}});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("trafficPolicy.outlierDetection: missing"),
        "{w:?}"
    );
    assert!(w[0].contains("only with outlierDetection"), "{w:?}");
}

#[test]
fn lint_warns_when_max_ejection_percent_cannot_eject() {
    // 4 endpoints: one ejection is 25%; 20% never lets it through.
    let mut tp = guide_traffic_policy(&FIXED_ORDER);
    tp["outlierDetection"]["maxEjectionPercent"] = json!(20);
    let config =
        json!({"trafficPolicy": tp, "inventory": {"source": "config", "endpoints": four_pods()}});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{w:?}"
    );
    assert!(w[0].contains("20% with 4 endpoints"), "{w:?}");
    assert!(w[0].contains("raise it to at least 25"), "{w:?}");

    // Istio's default (10%) with the same inventory.
    tp["outlierDetection"]
        .as_object_mut()
        .expect("od")
        .remove("maxEjectionPercent");
    let config =
        json!({"trafficPolicy": tp, "inventory": {"source": "config", "endpoints": four_pods()}});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1);
    assert!(
        warnings(&l)
            .iter()
            .any(|w| w.contains("10% with 4 endpoints")),
        "{}",
        l.stdout
    );

    // The guide's 50% is enough for 4.
    let config = json!({"trafficPolicy": guide_traffic_policy(&FIXED_ORDER),
        "inventory": {"source": "config", "endpoints": four_pods()}});
    assert_eq!(lint(&config.to_string()).code, 0);
}

#[test]
fn lint_warns_about_unknown_fields() {
    let mut tp = guide_traffic_policy(&FIXED_ORDER);
    tp["outlierDetection"]["baseEjectionTim"] = json!("3m");
    let config = json!({"trafficPolicy": tp, "trafficDistrbution": "PreferClose"});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("trafficPolicy.outlierDetection.baseEjectionTim: unknown field")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("trafficDistrbution: unknown field")),
        "{w:?}"
    );
}

#[test]
fn lint_refuses_invalid_configurations() {
    let mut tp = guide_traffic_policy(&FIXED_ORDER);
    tp["outlierDetection"]["maxEjectionPercent"] = json!(150);
    let l = lint(&json!({"trafficPolicy": tp}).to_string());
    assert_eq!(l.code, 2, "{}{}", l.stdout, l.stderr);
    assert!(
        l.stderr
            .contains("trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{}",
        l.stderr
    );
    assert!(warnings(&l).is_empty());

    let l = lint("trafficPolicy: {}");
    assert_eq!(l.code, 2);
    assert!(l.stderr.contains("not JSON"), "{}", l.stderr);
}

/// The pluginConfigs shipped in envoy/istio/, through the CLI as a user
/// would check them: clean.
#[test]
fn lint_accepts_the_shipped_plugin_configs() {
    for file in [
        "envoy/istio/route-header.yaml",
        "envoy/istio/override-host.yaml",
        "envoy/istio/waypoint.yaml",
    ] {
        let docs = yaml_docs(file);
        let plugin = kind(&docs, "WasmPlugin")[0];
        let config = plugin.pointer("/spec/pluginConfig").expect("pluginConfig");
        let l = lint(&config.to_string());
        assert_eq!(l.code, 0, "{file}: {}{}", l.stdout, l.stderr);
    }
}
