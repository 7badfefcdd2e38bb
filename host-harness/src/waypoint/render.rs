//! Renders an Envoy 1.40 bootstrap from the golden xDS istiod generated for
//! the guide's waypoint, with the substitutions that let it run on one
//! machine without Istio. Every substitution has an id in [`SUBSTITUTIONS`];
//! `envoy/waypoint/README.md` says for each why it does not change what is
//! tested, and a test keeps the two lists equal.
//!
//! ```text
//! client -> ingress (stands for connect_terminate: plain TCP, no CONNECT)
//!        -> main_internal (golden: original_dst, matcher on VIP:port, the
//!           in-ambient HCM: ..., our wasm filter, ..., stateful_session, router)
//!        -> inbound-vip|8000|http|... (golden cluster, EDS from a watched file)
//!        -> connect_originate (golden internal listener: HTTP CONNECT tunnel)
//!        -> ztunnel (stand-in: terminates CONNECT) -> loopback pod
//! ```

use std::path::Path;

use serde_json::{json, Value};

use super::eds::{CONNECT_ORIGINATE, INNER_CONNECT_ORIGINATE};
use super::golden::{Golden, ShapeError, SERVICE_CLUSTER};
use crate::envoy::accesslog::{DOWNSTREAM_FORMAT, UPSTREAM_FORMAT};
use crate::envoy::config::{file_log, Generated, Layout, LISTENER_NAME};

/// Id and one-line summary of every substitution the renderer makes. The
/// README (`envoy/waypoint/README.md`) explains each id.
pub const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("entry-listener", "connect_terminate (HBONE mTLS on :15008) -> a plain TCP listener on loopback that sets the service VIP as original destination and proxies into main_internal"),
    ("direct-chains-dropped", "main_internal's direct-http/direct-tcp chains and the encap cluster (workload-addressed traffic) are left out"),
    ("wasm-ecds-inlined", "the WasmPlugin's ECDS resource is inlined in the HTTP chain; code from a local file instead of the OCI image; pluginConfig = the scenario's"),
    ("istio-proxy-filters-removed", "waypoint_upstream_peer_metadata and istio.stats (istio-proxy-only extensions) are removed from the HTTP chain"),
    ("observability-added", "access log and router upstream log added to the HCM, request ids echoed, stat_prefix ingress"),
    ("route-retry-policy", "the route's retry policy is the scenario's `retries` (none without), with istiod's previous_hosts predicate"),
    ("cluster-destination-rule", "the inbound-vip cluster's outlier detection, LB policy and panic threshold are rendered from the scenario's trafficPolicy as istiod's applyOutlierDetection/applyLoadBalancer write them"),
    ("xds-from-files", "the inbound-vip cluster (CDS) and its endpoints (EDS) come from watched files instead of ADS; pods are loopback servers, each on its own 127.x.y.z address"),
    ("connect-originate-plain", "connect_originate's ORIGINAL_DST cluster with HBONE mTLS (SDS certificates) to podIP:15008 -> a STATIC plain-h2 cluster to the ztunnel stand-in"),
    ("ztunnel-stand-in", "ztunnel on the pod's node -> an internal listener that terminates CONNECT and forwards to the :authority address"),
    ("double-hbone-single-connect", "inner_connect_originate (double HBONE via outer_connect_originate to an east-west gateway) -> one CONNECT to the one remote pod the gateway endpoint stands for"),
    ("admin-cluster", "istio-proxy's bootstrap cluster prometheus_stats -> the admin on 127.0.0.1:<free port> (15000 on a waypoint)"),
    ("node-identity", "the node carries the waypoint's id, NETWORK and CLUSTER_ID metadata and no locality (as off-cloud); a locality only when the scenario needs one and the runner says so"),
];

const TYPE_TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const TYPE_HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TYPE_ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TYPE_INTERNAL_UPSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport";
const TYPE_RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
/// The ztunnel stand-in (an internal listener).
pub const ZTUNNEL: &str = "ztunnel";
/// Its upstream: ORIGINAL_DST on the CONNECT's `:authority`.
const PODS_CLUSTER: &str = "pods";
pub const ADMIN_CLUSTER: &str = "prometheus_stats";
/// Filters that exist only in istio-proxy's Envoy build.
const ISTIO_PROXY_ONLY: [&str; 2] = ["waypoint_upstream_peer_metadata", "istio.stats"];

/// What a scenario adds to the golden configuration.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    pub golden: &'a Golden,
    pub layout: &'a Layout,
    /// The plugin configuration (JSON text) the filter gets.
    pub plugin_config: String,
    /// The filter; None leaves it out (tests of the Envoy side alone).
    pub wasm: Option<&'a Path>,
    pub admin_port: u16,
    pub node: Value,
    /// `outlier_detection`, `lb_policy`, `common_lb_config` of the
    /// inbound-vip cluster (absent keys are removed from the golden one).
    pub cluster_policy: Value,
    /// The route's `retry_policy`; None: no retries.
    pub retry: Option<Value>,
}

/// A rendered bootstrap, the CDS file's clusters and the ids of the
/// substitutions made.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bootstrap: Value,
    /// The inbound-vip cluster, served from `layout.cds()` as istiod serves
    /// it over ADS: a dynamic cluster.
    pub clusters: Vec<Value>,
    pub applied: Vec<&'static str>,
}

impl Rendered {
    /// The files Envoy starts on: this bootstrap and CDS, and the service
    /// cluster's first load assignment.
    pub fn generated(self, load_assignment: Value) -> Generated {
        Generated {
            bootstrap: self.bootstrap,
            clusters: Some(self.clusters),
            load_assignment: Some(load_assignment),
        }
    }
}

struct Renderer<'a> {
    input: &'a RenderInput<'a>,
    applied: Vec<&'static str>,
}

/// Renders the bootstrap (static resources, CDS from `layout.cds()`) and
/// the service cluster (its EDS from `layout.eds()`).
pub fn render(input: &RenderInput) -> Result<Rendered, ShapeError> {
    let mut r = Renderer {
        input,
        applied: Vec::new(),
    };
    let g = input.golden;
    let main_internal = r.main_internal()?;
    let listeners = vec![
        r.entry_listener(main_internal_vip(g.listener("main_internal")?)?),
        main_internal,
        g.listener(CONNECT_ORIGINATE)?.clone(),
        r.inner_connect_originate()?,
        r.ztunnel_listener(),
    ];
    let service = r.service_cluster()?;
    let clusters = vec![
        g.cluster("main_internal")?.clone(),
        r.connect_originate_cluster()?,
        r.pods_cluster(),
        r.admin_cluster(),
    ];
    r.applied.push("node-identity");
    let bootstrap = json!({
        "node": input.node,
        "admin": { "address": { "socket_address": {
            "address": "127.0.0.1", "port_value": input.admin_port } } },
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": { "@type":
                "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener" }
        }],
        "static_resources": { "listeners": listeners, "clusters": clusters },
        "dynamic_resources": { "cds_config": watched_file(&input.layout.cds(), input.layout) },
    });
    Ok(Rendered {
        bootstrap,
        clusters: vec![service],
        applied: r.applied,
    })
}

/// An xDS config source: a file in the layout's watched directory.
fn watched_file(path: &Path, layout: &Layout) -> Value {
    json!({
        "resource_api_version": "V3",
        "path_config_source": {
            "path": path.to_string_lossy(),
            "watched_directory": { "path": layout.xds_dir().to_string_lossy() }
        }
    })
}

/// `ip:port` of the service the main_internal matcher sends to its HTTP
/// chain: the first IP range of its IP matcher (at the top, or after the
/// multi-network authority matcher's `on_no_match`) and the port key that
/// leads to the service chain.
fn main_internal_vip(listener: &Value) -> Result<String, ShapeError> {
    let matcher = listener
        .get("filter_chain_matcher")
        .ok_or("golden main_internal: no filter_chain_matcher")?;
    let ip_matcher = find_key(matcher, "range_matchers")
        .and_then(|m| m.get(0))
        .ok_or("golden main_internal: no IP range matcher")?;
    let ip = ip_matcher
        .pointer("/ranges/0/address_prefix")
        .and_then(Value::as_str)
        .ok_or("golden main_internal: no VIP in the matcher")?;
    let ports = ip_matcher
        .pointer("/on_match/matcher/matcher_tree/exact_match_map/map")
        .and_then(Value::as_object)
        .ok_or("golden main_internal: no port map")?;
    let port = ports
        .iter()
        .find(|(_, v)| v.pointer("/action/name").and_then(Value::as_str) == Some(SERVICE_CLUSTER))
        .map(|(k, _)| k.clone())
        .ok_or("golden main_internal: the service chain is not in the port map")?;
    Ok(format!("{ip}:{port}"))
}

/// The first value under `key` anywhere in `v` (depth first).
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

fn internal_upstream_raw() -> Value {
    json!({
        "name": "internal_upstream",
        "typed_config": {
            "@type": TYPE_INTERNAL_UPSTREAM,
            "transport_socket": { "name": "raw_buffer",
                "typed_config": { "@type": TYPE_RAW_BUFFER } }
        }
    })
}

impl Renderer<'_> {
    /// Stands for connect_terminate: what it does for a CONNECT to
    /// `VIP:port` (the authority becomes main_internal's original
    /// destination) without the CONNECT and the mTLS.
    fn entry_listener(&mut self, vip: String) -> Value {
        self.applied.push("entry-listener");
        json!({
            "name": LISTENER_NAME,
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
            // As connect_terminate; with the runner's step pinning.
            "connection_balance_config": { "exact_balance": {} },
            "enable_reuse_port": false,
            "filter_chains": [{ "filters": [
                { "name": "envoy.filters.network.set_filter_state",
                  "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
                    "on_new_connection": [{
                        "object_key": "envoy.filters.listener.original_dst.local_ip",
                        "format_string": { "text_format_source": { "inline_string": vip } },
                        "shared_with_upstream": "ONCE"
                    }]
                  } },
                { "name": "envoy.filters.network.tcp_proxy",
                  "typed_config": { "@type": TYPE_TCP_PROXY, "stat_prefix": "entry",
                                    "cluster": "main_internal" } }
            ]}]
        })
    }

    /// The golden main_internal listener with only the service's HTTP chain.
    fn main_internal(&mut self) -> Result<Value, ShapeError> {
        let mut l = self.input.golden.listener("main_internal")?.clone();
        let chains = l["filter_chains"]
            .as_array_mut()
            .ok_or("golden main_internal: no filter_chains")?;
        let before = chains.len();
        chains.retain(|c| c["name"].as_str() == Some(SERVICE_CLUSTER));
        if chains.len() != 1 {
            return Err(ShapeError(format!(
                "golden main_internal: no chain named {SERVICE_CLUSTER}"
            )));
        }
        if before > 1 {
            self.applied.push("direct-chains-dropped");
        }
        // The HCM is the last network filter (multi-network puts a
        // set_filter_state for the destination before it).
        let hcm = chains[0]["filters"]
            .as_array_mut()
            .and_then(|fs| {
                fs.iter_mut()
                    .find(|f| f["typed_config"]["@type"] == TYPE_HCM)
            })
            .map(|f| &mut f["typed_config"])
            .ok_or("golden service chain: no HCM")?;
        self.http_connection_manager(hcm)?;
        Ok(l)
    }

    fn http_connection_manager(&mut self, hcm: &mut Value) -> Result<(), ShapeError> {
        let log = self.input.layout.access_log();
        hcm["stat_prefix"] = json!(LISTENER_NAME);
        hcm["always_set_request_id_in_response"] = json!(true);
        hcm["access_log"] = json!([file_log(&log, DOWNSTREAM_FORMAT)]);
        self.applied.push("observability-added");
        let filters = hcm["http_filters"]
            .as_array_mut()
            .ok_or("golden HCM: no http_filters")?;
        let before = filters.len();
        filters.retain(|f| !ISTIO_PROXY_ONLY.contains(&f["name"].as_str().unwrap_or_default()));
        if filters.len() != before {
            self.applied.push("istio-proxy-filters-removed");
        }
        if self.input.wasm.is_none() {
            filters.retain(|f| f.get("config_discovery").is_none());
        }
        for f in filters.iter_mut() {
            if f.get("config_discovery").is_some() {
                *f = self.wasm_filter(f)?;
            } else if f["name"] == "envoy.filters.http.router" {
                f["typed_config"] = json!({ "@type": TYPE_ROUTER,
                    "upstream_log": [file_log(&log, UPSTREAM_FORMAT)] });
            }
        }
        let route = hcm
            .pointer_mut("/route_config/virtual_hosts/0/routes/0/route")
            .ok_or("golden HCM: no inline route")?;
        match &self.input.retry {
            Some(r) => route["retry_policy"] = r.clone(),
            None => {
                if let Some(m) = route.as_object_mut() {
                    m.remove("retry_policy");
                }
            }
        }
        self.applied.push("route-retry-policy");
        Ok(())
    }

    /// The ECDS resource the filter names, inlined, with a local module
    /// and the scenario's plugin configuration.
    fn wasm_filter(&mut self, filter: &Value) -> Result<Value, ShapeError> {
        let name = filter["name"]
            .as_str()
            .ok_or("config_discovery filter without a name")?;
        let mut ext = self.input.golden.extension_config(name)?.clone();
        let config = ext
            .pointer_mut("/typed_config/config")
            .ok_or_else(|| format!("ECDS {name}: no wasm config"))?;
        config["configuration"]["value"] = json!(self.input.plugin_config);
        let wasm = self.input.wasm.ok_or("no wasm file")?;
        config["vm_config"]["code"] = json!({ "local": { "filename": wasm.to_string_lossy() } });
        self.applied.push("wasm-ecds-inlined");
        Ok(ext)
    }

    /// The golden inbound-vip cluster, for the CDS file: EDS from the
    /// watched file, the scenario's DestinationRule fields. A dynamic
    /// cluster, as istiod's: Envoy creates it (and starts its outlier
    /// detector's interval timer) when CDS initializes, after the static
    /// listeners and so after the filter's VMs are configured, so the two
    /// detectors' sweeps start within milliseconds of each other. A static
    /// one was created before the wasm module compiled, up to a second
    /// earlier under load.
    fn service_cluster(&mut self) -> Result<Value, ShapeError> {
        let mut c = self.input.golden.cluster(SERVICE_CLUSTER)?.clone();
        let layout = self.input.layout;
        c["eds_cluster_config"]["eds_config"] = watched_file(&layout.eds(), layout);
        self.applied.push("xds-from-files");
        let m = c.as_object_mut().ok_or("golden cluster is not an object")?;
        for key in ["outlier_detection", "lb_policy", "common_lb_config"] {
            match self.input.cluster_policy.get(key) {
                Some(v) => m.insert(key.to_string(), v.clone()),
                None => m.remove(key),
            };
        }
        self.applied.push("cluster-destination-rule");
        Ok(c)
    }

    /// connect_originate's tunnel goes to the ztunnel stand-in, plain h2
    /// (the golden HTTP/2 options kept).
    fn connect_originate_cluster(&mut self) -> Result<Value, ShapeError> {
        let g = self.input.golden.cluster(CONNECT_ORIGINATE)?;
        self.applied.push("connect-originate-plain");
        Ok(json!({
            "name": CONNECT_ORIGINATE,
            "type": "STATIC",
            "connect_timeout": g["connect_timeout"],
            "typed_extension_protocol_options": g["typed_extension_protocol_options"],
            "transport_socket": internal_upstream_raw(),
            "load_assignment": { "cluster_name": CONNECT_ORIGINATE, "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "envoy_internal_address": {
                    "server_listener_name": ZTUNNEL } } } }] }] }
        }))
    }

    /// inner_connect_originate: the golden listener's tunnel, but straight
    /// to the pod (connect_originate's shape) instead of a double CONNECT.
    fn inner_connect_originate(&mut self) -> Result<Value, ShapeError> {
        let golden = self.input.golden.listener(INNER_CONNECT_ORIGINATE)?;
        let headers = golden
            .pointer("/filter_chains/0/filters")
            .and_then(Value::as_array)
            .and_then(|fs| {
                fs.iter()
                    .find(|f| f["name"] == "envoy.filters.network.tcp_proxy")
            })
            .and_then(|f| f.pointer("/typed_config/tunneling_config/headers_to_add"))
            .cloned()
            .unwrap_or(json!([]));
        let mut l = self.input.golden.listener(CONNECT_ORIGINATE)?.clone();
        l["name"] = json!(INNER_CONNECT_ORIGINATE);
        let tcp = l
            .pointer_mut("/filter_chains/0/filters/0/typed_config")
            .ok_or("golden connect_originate: no tcp_proxy")?;
        tcp["stat_prefix"] = json!(INNER_CONNECT_ORIGINATE);
        tcp["tunneling_config"]["headers_to_add"] = headers;
        self.applied.push("double-hbone-single-connect");
        Ok(l)
    }

    fn ztunnel_listener(&mut self) -> Value {
        self.applied.push("ztunnel-stand-in");
        json!({
            "name": ZTUNNEL,
            "internal_listener": {},
            "filter_chains": [{ "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": TYPE_HCM,
                    "stat_prefix": ZTUNNEL,
                    "codec_type": "HTTP2",
                    "http2_protocol_options": { "allow_connect": true },
                    "upgrade_configs": [{ "upgrade_type": "CONNECT" }],
                    "route_config": { "virtual_hosts": [{
                        "name": "pods", "domains": ["*"],
                        "routes": [{ "match": { "connect_matcher": {} },
                            "route": { "cluster": PODS_CLUSTER,
                                "upgrade_configs": [{ "upgrade_type": "CONNECT",
                                                      "connect_config": {} }] } }]
                    }]},
                    "http_filters": [{ "name": "envoy.filters.http.router",
                        "typed_config": { "@type": TYPE_ROUTER } }]
                }
            }]}]
        })
    }

    fn pods_cluster(&self) -> Value {
        json!({
            "name": PODS_CLUSTER,
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "1s",
            "original_dst_lb_config": { "use_http_header": true, "http_header_name": ":authority" }
        })
    }

    fn admin_cluster(&mut self) -> Value {
        self.applied.push("admin-cluster");
        json!({
            "name": ADMIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "0.250s",
            "load_assignment": { "cluster_name": ADMIN_CLUSTER, "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "socket_address": {
                    "address": "127.0.0.1", "port_value": self.input.admin_port } } } }] }] }
        })
    }
}

/// A free TCP port on 127.0.0.1 for the admin (its clients need it before
/// Envoy starts: the admin cluster points at it).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.local_addr().map(|a| a.port())
}
