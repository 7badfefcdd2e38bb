//! The Istio manifests in `envoy/istio/`, checked against istio/api's
//! schemas and the filter's own configuration parser.

use super::*;

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
pub(crate) fn envoy_validates_cluster(cluster: &Value) -> Option<Output> {
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
