//! Envoy configuration generators (JSON, `serde_json::Value`).
//!
//! Two shapes, both with one HTTP listener on loopback (`ingress`), the
//! admin interface on loopback, and the access log described in
//! [`super::accesslog`] (one `U` line per upstream attempt from the router's
//! `upstream_log`, one `D` line per downstream request, same file):
//!
//! - **filter mode** ([`FilterModeConfig`]): optional wasm filter before the
//!   router; the cluster(s) come from a CDS file (`path_config_source` with a
//!   `watched_directory`), so endpoints and the inventory metadata can change
//!   while Envoy runs. Steering ([`Steering`]): `override_host` load
//!   balancing policy, `ORIGINAL_DST` from a header, or a route
//!   `cluster_header` with one cluster per backend.
//! - **native mode** ([`NativeModeConfig`]): no filter; one static `EDS`
//!   cluster whose `ClusterLoadAssignment` comes from an EDS file, with
//!   per-endpoint priorities, an LB policy, a panic threshold and outlier
//!   detection.
//!
//! Every cluster carries the inventory as metadata:
//! `metadata.filter_metadata["locality-failover"] = {"revision": "...",
//! "endpoints": [{"address", "name", "labels", "weight"}]}` (route-header
//! mode adds `"backend"` to each endpoint).
//!
//! Files of one run live in a work directory, see [`Layout`]. xDS files are
//! replaced atomically (write to a temporary name in the watched directory,
//! then rename), which is what Envoy's directory watch reacts to.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::accesslog::{DOWNSTREAM_FORMAT, UPSTREAM_FORMAT};

pub const METADATA_NAMESPACE: &str = "locality-failover";
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-locality-failover-hosts";
pub const DEFAULT_ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";
pub const DEFAULT_ROUTE_HEADER: &str = "x-locality-failover-backend";
pub const DEFAULT_ROOT_ID: &str = "locality_failover";
pub const LISTENER_NAME: &str = "ingress";
pub const DEFAULT_CLUSTER: &str = "svc";

pub const LABEL_NETWORK: &str = "topology.istio.io/network";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_SUBZONE: &str = "topology.istio.io/subzone";

const TYPE_HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TYPE_ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TYPE_WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const TYPE_STRING: &str = "type.googleapis.com/google.protobuf.StringValue";
const TYPE_FILE_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const TYPE_OVERRIDE_HOST: &str =
    "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost";
const TYPE_ROUND_ROBIN: &str =
    "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin";
const TYPE_CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const TYPE_CLA: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Where the files of one Envoy run live.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        Layout { dir: dir.into() }
    }
    /// `<dir>/envoy.json`, the bootstrap.
    pub fn bootstrap(&self) -> PathBuf {
        self.dir.join("envoy.json")
    }
    /// `<dir>/xds`, the watched directory.
    pub fn xds_dir(&self) -> PathBuf {
        self.dir.join("xds")
    }
    pub fn cds(&self) -> PathBuf {
        self.xds_dir().join("cds.json")
    }
    pub fn eds(&self) -> PathBuf {
        self.xds_dir().join("eds.json")
    }
    /// Access log: `U` and `D` lines (see [`super::accesslog`]).
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
    /// Envoy's own log (stderr and stdout).
    pub fn envoy_log(&self) -> PathBuf {
        self.dir.join("envoy.log")
    }
    /// Written by Envoy (`--admin-address-path`).
    pub fn admin_address_file(&self) -> PathBuf {
        self.dir.join("admin.addr")
    }
}

/// One upstream endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub address: SocketAddr,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// Native mode: the Envoy priority (0 = best).
    pub priority: u32,
    /// Route-header mode: the backend cluster reaching this endpoint
    /// (None: a backend of its own, named after the endpoint).
    pub backend: Option<String>,
    /// Native mode with locality-weighted LB: the weight of this endpoint's
    /// (priority, locality) group (e.g. from a `distribute` rule). None: the
    /// sum of the group's endpoint weights. The group takes the first
    /// member's value.
    pub locality_weight: Option<u32>,
}

impl Endpoint {
    pub fn new(name: impl Into<String>, address: SocketAddr) -> Endpoint {
        Endpoint {
            name: name.into(),
            address,
            labels: BTreeMap::new(),
            weight: 1,
            priority: 0,
            backend: None,
            locality_weight: None,
        }
    }
    pub fn with_priority(mut self, priority: u32) -> Endpoint {
        self.priority = priority;
        self
    }
    pub fn with_weight(mut self, weight: u32) -> Endpoint {
        self.weight = weight;
        self
    }
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Endpoint {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn with_backend(mut self, backend: impl Into<String>) -> Endpoint {
        self.backend = Some(backend.into());
        self
    }
    /// The route-header backend: `backend`, or the endpoint's name.
    pub fn backend_name(&self) -> &str {
        self.backend.as_deref().unwrap_or(&self.name)
    }
}

/// Envoy's node (the waypoint's identity): locality from the standard
/// topology labels, `metadata.LABELS` = all labels, `metadata.NETWORK` =
/// the network label, as Istio writes them.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
}

impl Default for Node {
    fn default() -> Node {
        Node {
            id: "locality-failover-test".into(),
            cluster: "locality-failover".into(),
            labels: BTreeMap::new(),
        }
    }
}

impl Node {
    pub fn with_labels(labels: BTreeMap<String, String>) -> Node {
        Node {
            labels,
            ..Node::default()
        }
    }

    pub fn to_json(&self) -> Value {
        let mut node = json!({ "id": self.id, "cluster": self.cluster });
        let mut locality = Map::new();
        for (key, label) in [
            ("region", LABEL_REGION),
            ("zone", LABEL_ZONE),
            ("sub_zone", LABEL_SUBZONE),
        ] {
            if let Some(v) = self.labels.get(label) {
                locality.insert(key.into(), json!(v));
            }
        }
        if !locality.is_empty() {
            node["locality"] = Value::Object(locality);
        }
        let mut metadata = Map::new();
        if !self.labels.is_empty() {
            metadata.insert("LABELS".into(), json!(self.labels));
        }
        if let Some(n) = self.labels.get(LABEL_NETWORK) {
            metadata.insert("NETWORK".into(), json!(n));
        }
        if !metadata.is_empty() {
            node["metadata"] = Value::Object(metadata);
        }
        node
    }
}

/// The route's retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try (Envoy `num_retries`; Istio's
    /// `HTTPRetry.attempts` means the same).
    pub attempts: u32,
    /// Envoy `retry_on`, e.g. `"connect-failure"` or `"5xx,connect-failure"`.
    pub retry_on: String,
    /// Adds `retry_host_predicate: previous_hosts` with
    /// `host_selection_retry_max_attempts: 5`, as Istio's default policy does.
    pub previous_hosts: bool,
    pub retriable_status_codes: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
}

impl RetryPolicy {
    pub fn new(attempts: u32, retry_on: impl Into<String>) -> RetryPolicy {
        RetryPolicy {
            attempts,
            retry_on: retry_on.into(),
            previous_hosts: false,
            retriable_status_codes: Vec::new(),
            per_try_timeout: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({ "retry_on": self.retry_on, "num_retries": self.attempts });
        if self.previous_hosts {
            v["retry_host_predicate"] = json!([{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                }
            }]);
            v["host_selection_retry_max_attempts"] = json!(5);
        }
        if !self.retriable_status_codes.is_empty() {
            v["retriable_status_codes"] = json!(self.retriable_status_codes);
        }
        if let Some(t) = self.per_try_timeout {
            v["per_try_timeout"] = json!(duration(t));
        }
        v
    }
}

/// The wasm filter (V8).
#[derive(Clone, Debug, PartialEq)]
pub struct WasmFilter {
    /// Local `.wasm` file (made absolute when the config is generated).
    pub code_path: PathBuf,
    /// Plugin configuration: a JSON document, passed as a string.
    pub plugin_config: String,
    pub root_id: String,
    pub vm_id: String,
    /// Default `envoy.wasm.runtime.v8`.
    pub runtime: String,
}

impl WasmFilter {
    pub fn new(code_path: impl Into<PathBuf>, plugin_config: impl Into<String>) -> WasmFilter {
        WasmFilter {
            code_path: code_path.into(),
            plugin_config: plugin_config.into(),
            root_id: DEFAULT_ROOT_ID.into(),
            vm_id: DEFAULT_ROOT_ID.into(),
            runtime: "envoy.wasm.runtime.v8".into(),
        }
    }

    pub fn to_json(&self) -> Value {
        let path = absolute(&self.code_path);
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": TYPE_WASM,
                "config": {
                    "name": self.root_id,
                    "root_id": self.root_id,
                    "configuration": { "@type": TYPE_STRING, "value": self.plugin_config },
                    "vm_config": {
                        "vm_id": self.vm_id,
                        "runtime": self.runtime,
                        "code": { "local": { "filename": path.to_string_lossy() } }
                    }
                }
            }
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// How the filter's choice reaches Envoy's upstream selection.
#[derive(Clone, Debug, PartialEq)]
pub enum Steering {
    /// One STATIC cluster with every endpoint and the
    /// `envoy.load_balancing_policies.override_host` policy reading `header`
    /// (`ip:port,ip:port,...`), fallback ROUND_ROBIN.
    OverrideHost { header: String },
    /// One `ORIGINAL_DST` cluster (`lb_policy: CLUSTER_PROVIDED`) taking the
    /// destination from `header` (`original_dst_lb_config.use_http_header`).
    OriginalDst { header: String },
    /// Route `cluster_header: header`; one STATIC cluster per backend name
    /// (see [`Endpoint::backend`]), each ROUND_ROBIN.
    RouteHeader { header: String },
}

impl Steering {
    pub fn override_host() -> Steering {
        Steering::OverrideHost {
            header: DEFAULT_OVERRIDE_HEADER.into(),
        }
    }
    pub fn original_dst() -> Steering {
        Steering::OriginalDst {
            header: DEFAULT_ORIGINAL_DST_HEADER.into(),
        }
    }
    pub fn route_header() -> Steering {
        Steering::RouteHeader {
            header: DEFAULT_ROUTE_HEADER.into(),
        }
    }
    pub fn header(&self) -> &str {
        match self {
            Steering::OverrideHost { header }
            | Steering::OriginalDst { header }
            | Steering::RouteHeader { header } => header,
        }
    }
}

/// Listener, admin, timeouts: common to both modes.
#[derive(Clone, Debug, PartialEq)]
pub struct Frontend {
    /// 0: an ephemeral port (read it back with `EnvoyProcess::listener_addr`).
    pub listener_port: u16,
    /// 0: an ephemeral port (Envoy writes it to `Layout::admin_address_file`).
    pub admin_port: u16,
    pub route_timeout: Duration,
    pub connect_timeout: Duration,
    /// Envoy log path for the access log; None: `Layout::access_log`.
    pub access_log: Option<PathBuf>,
    /// Listener `connection_balance_config: exact_balance` (and
    /// `enable_reuse_port: false`): each new downstream connection goes to
    /// the worker with the fewest connections, ties to the first worker.
    /// Holding the last `workers - 1` connections open while opening the
    /// next one therefore visits the workers in turn (the scenario runner
    /// pins step `i` to worker `i % workers` this way).
    pub exact_balance: bool,
}

impl Default for Frontend {
    fn default() -> Frontend {
        Frontend {
            listener_port: 0,
            admin_port: 0,
            route_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            access_log: None,
            exact_balance: false,
        }
    }
}

/// Filter mode: optional wasm filter, steering, CDS-file clusters.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterModeConfig {
    pub node: Node,
    pub steering: Steering,
    /// None: no wasm filter (the client sets the steering header itself).
    pub wasm: Option<WasmFilter>,
    pub endpoints: Vec<Endpoint>,
    /// Inventory revision written into the cluster metadata.
    pub revision: String,
    pub retry: Option<RetryPolicy>,
    /// Cluster name (override-host, original-dst); unused by route-header.
    pub cluster_name: String,
    pub frontend: Frontend,
}

impl FilterModeConfig {
    pub fn new(steering: Steering, endpoints: Vec<Endpoint>) -> FilterModeConfig {
        FilterModeConfig {
            node: Node::default(),
            steering,
            wasm: None,
            endpoints,
            revision: "1".into(),
            retry: None,
            cluster_name: DEFAULT_CLUSTER.into(),
            frontend: Frontend::default(),
        }
    }

    /// The inventory metadata every cluster carries.
    pub fn metadata(&self) -> Value {
        let with_backend = matches!(self.steering, Steering::RouteHeader { .. });
        inventory_metadata(&self.endpoints, &self.revision, with_backend)
    }

    /// Names of the clusters [`Self::clusters`] produces.
    pub fn cluster_names(&self) -> Vec<String> {
        match self.steering {
            Steering::RouteHeader { .. } => {
                let mut names: Vec<String> = Vec::new();
                for e in &self.endpoints {
                    if !names.iter().any(|n| n == e.backend_name()) {
                        names.push(e.backend_name().to_string());
                    }
                }
                names
            }
            _ => vec![self.cluster_name.clone()],
        }
    }

    /// The CDS resources (`envoy.config.cluster.v3.Cluster`, without
    /// `@type`; [`cds_file`] adds it).
    pub fn clusters(&self) -> Vec<Value> {
        let metadata = json!({ "filter_metadata": { METADATA_NAMESPACE: self.metadata() } });
        let connect_timeout = duration(self.frontend.connect_timeout);
        match &self.steering {
            Steering::OverrideHost { header } => vec![json!({
                "name": self.cluster_name,
                "type": "STATIC",
                "connect_timeout": connect_timeout,
                "load_assignment": load_assignment(&self.cluster_name, self.endpoints.iter().collect(), false, false),
                "load_balancing_policy": { "policies": [{ "typed_extension_config": {
                    "name": "envoy.load_balancing_policies.override_host",
                    "typed_config": {
                        "@type": TYPE_OVERRIDE_HOST,
                        "override_host_sources": [{ "header": header }],
                        "fallback_policy": { "policies": [{ "typed_extension_config": {
                            "name": "envoy.load_balancing_policies.round_robin",
                            "typed_config": { "@type": TYPE_ROUND_ROBIN }
                        }}]}
                    }
                }}]},
                "metadata": metadata,
            })],
            Steering::OriginalDst { header } => vec![json!({
                "name": self.cluster_name,
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": connect_timeout,
                "original_dst_lb_config": { "use_http_header": true, "http_header_name": header },
                "metadata": metadata,
            })],
            Steering::RouteHeader { .. } => self
                .cluster_names()
                .iter()
                .map(|backend| {
                    let members: Vec<&Endpoint> = self
                        .endpoints
                        .iter()
                        .filter(|e| e.backend_name() == backend)
                        .collect();
                    json!({
                        "name": backend,
                        "type": "STATIC",
                        "connect_timeout": connect_timeout,
                        "lb_policy": "ROUND_ROBIN",
                        "load_assignment": load_assignment(backend, members, false, false),
                        "metadata": metadata,
                    })
                })
                .collect(),
        }
    }

    /// The bootstrap: listener with (wasm +) router, admin, CDS from
    /// `layout.cds()` watched in `layout.xds_dir()`.
    pub fn bootstrap(&self, layout: &Layout) -> Value {
        let route = match &self.steering {
            Steering::RouteHeader { header } => json!({ "cluster_header": header }),
            _ => json!({ "cluster": self.cluster_name }),
        };
        let mut filters = Vec::new();
        if let Some(w) = &self.wasm {
            filters.push(w.to_json());
        }
        let listener = listener(&self.frontend, layout, route, self.retry.as_ref(), filters);
        json!({
            "node": self.node.to_json(),
            "admin": admin(&self.frontend),
            "static_resources": { "listeners": [listener] },
            "dynamic_resources": {
                "cds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {
                        "path": layout.cds().to_string_lossy(),
                        "watched_directory": { "path": layout.xds_dir().to_string_lossy() }
                    }
                }
            }
        })
    }

    pub fn generate(&self, layout: &Layout) -> Generated {
        Generated {
            bootstrap: self.bootstrap(layout),
            clusters: Some(self.clusters()),
            load_assignment: None,
        }
    }
}

/// `metadata.filter_metadata["locality-failover"]` content.
pub fn inventory_metadata(endpoints: &[Endpoint], revision: &str, with_backend: bool) -> Value {
    let list: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let mut v = json!({
                "address": e.address.to_string(),
                "name": e.name,
                "labels": e.labels,
                "weight": e.weight,
            });
            if with_backend {
                v["backend"] = json!(e.backend_name());
            }
            v
        })
        .collect();
    json!({ "revision": revision, "endpoints": list })
}

/// Load balancing policy of the native cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
}

impl LbPolicy {
    pub fn envoy_name(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "ROUND_ROBIN",
            LbPolicy::LeastRequest => "LEAST_REQUEST",
            LbPolicy::Random => "RANDOM",
        }
    }
}

/// Envoy `outlier_detection`. Defaults are Envoy's, except
/// `enforcing_success_rate` 0 (as Istio writes it).
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failure: u32,
    pub enforcing_success_rate: u32,
    /// None: Envoy's default (300 s).
    pub max_ejection_time: Option<Duration>,
}

impl Default for OutlierDetection {
    fn default() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_success_rate: 0,
            max_ejection_time: None,
        }
    }
}

impl OutlierDetection {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "consecutive_5xx": self.consecutive_5xx,
            "enforcing_consecutive_5xx": self.enforcing_consecutive_5xx,
            "consecutive_gateway_failure": self.consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure": self.enforcing_consecutive_gateway_failure,
            "interval": duration(self.interval),
            "base_ejection_time": duration(self.base_ejection_time),
            "max_ejection_percent": self.max_ejection_percent,
            "split_external_local_origin_errors": self.split_external_local_origin_errors,
            "consecutive_local_origin_failure": self.consecutive_local_origin_failure,
            "enforcing_success_rate": self.enforcing_success_rate,
        });
        if let Some(t) = self.max_ejection_time {
            v["max_ejection_time"] = json!(duration(t));
        }
        v
    }
}

/// Native mode: an EDS cluster fed from a file, Envoy's own LB and outlier
/// detection, no filter.
#[derive(Clone, Debug, PartialEq)]
pub struct NativeModeConfig {
    pub node: Node,
    /// `priority` of each endpoint is used.
    pub endpoints: Vec<Endpoint>,
    pub lb_policy: LbPolicy,
    /// Percent; None: Envoy's default (50).
    pub healthy_panic_threshold: Option<f64>,
    pub outlier: Option<OutlierDetection>,
    pub retry: Option<RetryPolicy>,
    /// None: Envoy's default (140).
    pub overprovisioning_factor: Option<u32>,
    /// `common_lb_config.locality_weighted_lb_config` (as Istio sets it for
    /// failover with `failoverPriority`/`failover`, and for `distribute`);
    /// each (priority, locality) group then carries a
    /// `load_balancing_weight` (see [`Endpoint::locality_weight`]).
    pub locality_weighted: bool,
    /// `common_lb_config.update_merge_window`; None: Envoy's default (1 s),
    /// which Istio leaves. Health changes (outlier ejections) within the
    /// window of the previous update reach the workers only when it ends.
    pub update_merge_window: Option<Duration>,
    pub cluster_name: String,
    pub frontend: Frontend,
}

impl NativeModeConfig {
    pub fn new(endpoints: Vec<Endpoint>) -> NativeModeConfig {
        NativeModeConfig {
            node: Node::default(),
            endpoints,
            lb_policy: LbPolicy::RoundRobin,
            healthy_panic_threshold: None,
            outlier: None,
            retry: None,
            overprovisioning_factor: None,
            locality_weighted: false,
            update_merge_window: None,
            cluster_name: DEFAULT_CLUSTER.into(),
            frontend: Frontend::default(),
        }
    }

    /// The `ClusterLoadAssignment` (without `@type`; [`eds_file`] adds it):
    /// one `LocalityLbEndpoints` per (priority, locality), localities taken
    /// from the endpoints' topology labels.
    pub fn load_assignment(&self) -> Value {
        let mut cla = load_assignment(
            &self.cluster_name,
            self.endpoints.iter().collect(),
            true,
            self.locality_weighted,
        );
        if let Some(f) = self.overprovisioning_factor {
            cla["policy"] = json!({ "overprovisioning_factor": f });
        }
        cla
    }

    /// The static EDS cluster.
    pub fn cluster(&self, layout: &Layout) -> Value {
        let mut c = json!({
            "name": self.cluster_name,
            "type": "EDS",
            "connect_timeout": duration(self.frontend.connect_timeout),
            "lb_policy": self.lb_policy.envoy_name(),
            "eds_cluster_config": {
                "service_name": self.cluster_name,
                "eds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {
                        "path": layout.eds().to_string_lossy(),
                        "watched_directory": { "path": layout.xds_dir().to_string_lossy() }
                    }
                }
            },
            "metadata": { "filter_metadata": { METADATA_NAMESPACE:
                inventory_metadata(&self.endpoints, "native", false) } },
        });
        let mut common = Map::new();
        if let Some(p) = self.healthy_panic_threshold {
            common.insert("healthy_panic_threshold".into(), json!({ "value": p }));
        }
        if self.locality_weighted {
            common.insert("locality_weighted_lb_config".into(), json!({}));
        }
        if let Some(w) = self.update_merge_window {
            common.insert("update_merge_window".into(), json!(duration(w)));
        }
        if !common.is_empty() {
            c["common_lb_config"] = Value::Object(common);
        }
        if let Some(o) = &self.outlier {
            c["outlier_detection"] = o.to_json();
        }
        c
    }

    pub fn bootstrap(&self, layout: &Layout) -> Value {
        let route = json!({ "cluster": self.cluster_name });
        let listener = listener(
            &self.frontend,
            layout,
            route,
            self.retry.as_ref(),
            Vec::new(),
        );
        json!({
            "node": self.node.to_json(),
            "admin": admin(&self.frontend),
            "static_resources": { "listeners": [listener], "clusters": [self.cluster(layout)] },
        })
    }

    pub fn generate(&self, layout: &Layout) -> Generated {
        Generated {
            bootstrap: self.bootstrap(layout),
            clusters: None,
            load_assignment: Some(self.load_assignment()),
        }
    }
}

/// A generated configuration: the bootstrap and the initial xDS resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub bootstrap: Value,
    /// Filter mode: the CDS file's clusters.
    pub clusters: Option<Vec<Value>>,
    /// Native mode: the EDS file's load assignment.
    pub load_assignment: Option<Value>,
}

impl Generated {
    /// Writes the bootstrap and the initial xDS files (version "1").
    pub fn write(&self, layout: &Layout) -> io::Result<()> {
        std::fs::create_dir_all(layout.xds_dir())?;
        write_atomically(&layout.bootstrap(), &pretty(&self.bootstrap))?;
        if let Some(c) = &self.clusters {
            write_atomically(&layout.cds(), &pretty(&cds_file("1", c)))?;
        }
        if let Some(l) = &self.load_assignment {
            write_atomically(&layout.eds(), &pretty(&eds_file("1", l)))?;
        }
        Ok(())
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A CDS file (`DiscoveryResponse`) holding `clusters`.
pub fn cds_file(version: &str, clusters: &[Value]) -> Value {
    let resources: Vec<Value> = clusters
        .iter()
        .map(|c| with_type(c, TYPE_CLUSTER))
        .collect();
    json!({ "version_info": version, "resources": resources })
}

/// An EDS file (`DiscoveryResponse`) holding one `ClusterLoadAssignment`.
pub fn eds_file(version: &str, load_assignment: &Value) -> Value {
    json!({ "version_info": version, "resources": [with_type(load_assignment, TYPE_CLA)] })
}

fn with_type(v: &Value, type_url: &str) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), json!(type_url));
    if let Value::Object(o) = v {
        for (k, x) in o {
            m.insert(k.clone(), x.clone());
        }
    }
    Value::Object(m)
}

/// Writes `contents` to a temporary file beside `path`, then renames it onto
/// `path` (an atomic replace, and the "moved to" event Envoy's
/// `watched_directory` reacts to).
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Protobuf JSON duration: `"10s"`, `"0.250s"`.
pub fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
        format!("{}s", s.trim_end_matches('0'))
    }
}

fn socket_address(a: &SocketAddr) -> Value {
    json!({ "socket_address": { "address": a.ip().to_string(), "port_value": a.port() } })
}

/// A `ClusterLoadAssignment`. With `by_priority`: one `LocalityLbEndpoints`
/// per (priority, locality), in order of priority then first appearance;
/// otherwise all endpoints in one group at priority 0. With
/// `locality_weights`, each group carries a `load_balancing_weight`.
fn load_assignment(
    cluster: &str,
    endpoints: Vec<&Endpoint>,
    by_priority: bool,
    locality_weights: bool,
) -> Value {
    let locality_of = |e: &Endpoint| -> (String, String, String) {
        let get = |k: &str| e.labels.get(k).cloned().unwrap_or_default();
        (get(LABEL_REGION), get(LABEL_ZONE), get(LABEL_SUBZONE))
    };
    type Group<'a> = ((u32, (String, String, String)), Vec<&'a Endpoint>);
    let mut groups: Vec<Group> = Vec::new();
    for e in endpoints {
        let key = if by_priority {
            (e.priority, locality_of(e))
        } else {
            (0, Default::default())
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(e),
            None => groups.push((key, vec![e])),
        }
    }
    groups.sort_by_key(|((p, _), _)| *p);
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|((priority, (region, zone, sub_zone)), members)| {
            let lb_endpoints: Vec<Value> = members
                .iter()
                .map(|e| {
                    json!({
                        "endpoint": { "address": socket_address(&e.address), "hostname": e.name },
                        "load_balancing_weight": e.weight.max(1),
                    })
                })
                .collect();
            let mut g = json!({ "lb_endpoints": lb_endpoints });
            if locality_weights {
                let weight = members
                    .first()
                    .and_then(|e| e.locality_weight)
                    .unwrap_or_else(|| members.iter().map(|e| e.weight.max(1)).sum());
                g["load_balancing_weight"] = json!(weight.max(1));
            }
            if priority > 0 {
                g["priority"] = json!(priority);
            }
            if !(region.is_empty() && zone.is_empty() && sub_zone.is_empty()) {
                g["locality"] = json!({ "region": region, "zone": zone, "sub_zone": sub_zone });
            }
            g
        })
        .collect();
    json!({ "cluster_name": cluster, "endpoints": groups })
}

fn admin(frontend: &Frontend) -> Value {
    json!({ "address": { "socket_address": { "address": "127.0.0.1", "port_value": frontend.admin_port } } })
}

fn file_log(path: &Path, format: &str) -> Value {
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": TYPE_FILE_LOG,
            "path": path.to_string_lossy(),
            "log_format": { "text_format_source": { "inline_string": format } }
        }
    })
}

fn listener(
    frontend: &Frontend,
    layout: &Layout,
    mut route: Value,
    retry: Option<&RetryPolicy>,
    mut http_filters: Vec<Value>,
) -> Value {
    route["timeout"] = json!(duration(frontend.route_timeout));
    if let Some(r) = retry {
        route["retry_policy"] = r.to_json();
    }
    let log_path = frontend
        .access_log
        .clone()
        .unwrap_or_else(|| layout.access_log());
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": TYPE_ROUTER,
            "upstream_log": [file_log(&log_path, UPSTREAM_FORMAT)]
        }
    }));
    let mut l = json!({
        "name": LISTENER_NAME,
        "address": socket_address(&SocketAddr::from(([127, 0, 0, 1], frontend.listener_port))),
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": TYPE_HCM,
                "stat_prefix": LISTENER_NAME,
                // The client learns each request's id and can find its log lines.
                "always_set_request_id_in_response": true,
                "access_log": [file_log(&log_path, DOWNSTREAM_FORMAT)],
                "route_config": {
                    "name": "local",
                    // Clusters come from CDS after the listener is built.
                    "validate_clusters": false,
                    "virtual_hosts": [{
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{ "match": { "prefix": "/" }, "route": route }]
                    }]
                },
                "http_filters": http_filters
            }
        }]}]
    });
    if frontend.exact_balance {
        l["connection_balance_config"] = json!({ "exact_balance": {} });
        l["enable_reuse_port"] = json!(false);
    }
    l
}

// ---------------------------------------------------------------------------
// Readable examples (the files in `envoy/*.yaml` at the repository root).

/// One example file: its name in the `envoy/` directory and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExampleFile {
    pub name: String,
    pub text: String,
}

/// Where the examples expect the built filter (relative to the repository root).
pub const EXAMPLE_WASM: &str = "build/locality_failover.wasm";
/// Directory of the examples, relative to the repository root (their
/// xDS files are there too, and it is their watched directory).
pub const EXAMPLE_DIR: &str = "envoy";

fn replace_strings(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, from, to)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_strings(x, from, to)),
        _ => {}
    }
}

fn example_endpoints() -> Vec<Endpoint> {
    let ep = |name: &str, last: u8, region: &str, zone: &str, priority: u32| {
        Endpoint::new(name, SocketAddr::from(([127, 0, 0, last], 8080)))
            .with_label(LABEL_NETWORK, "net-1")
            .with_label(LABEL_REGION, region)
            .with_label(LABEL_ZONE, zone)
            .with_priority(priority)
    };
    vec![
        ep("pod-a", 2, "us-east-1", "us-east-1a", 0).with_backend("svc-us-east-1a"),
        ep("pod-b", 3, "us-east-1", "us-east-1b", 1).with_backend("svc-us-east-1b"),
        ep("pod-c", 4, "us-west-2", "us-west-2a", 2).with_backend("svc-us-west-2a"),
    ]
}

fn example_node() -> Node {
    let labels = [
        (LABEL_NETWORK, "net-1"),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Node {
        id: "waypoint-example".into(),
        cluster: "waypoint".into(),
        labels,
    }
}

fn example_frontend() -> Frontend {
    Frontend {
        listener_port: 10000,
        admin_port: 9901,
        ..Frontend::default()
    }
}

/// One example: a bootstrap and its xDS file, as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleConfig {
    /// `override-host`, `original-dst`, `route-header`, `native-eds`.
    pub mode: String,
    description: String,
    wasm: bool,
    pub bootstrap: Value,
    /// `<mode>.cds.yaml` or `<mode>.eds.yaml`.
    pub xds_file: String,
    /// The xDS file's `DiscoveryResponse`.
    pub xds: Value,
}

impl ExampleConfig {
    /// `<mode>.yaml` and the xDS file, rendered as commented YAML.
    pub fn files(&self) -> Vec<ExampleFile> {
        let xds_comment = if self.xds_file.contains(".cds.") {
            format!(
                "# CDS file of {}.yaml (a DiscoveryResponse). Envoy reloads it when it is\n\
                 # replaced by a rename inside the watched directory.\n",
                self.mode
            )
        } else {
            format!(
                "# EDS file of {}.yaml (a DiscoveryResponse): one LocalityLbEndpoints\n\
                 # per (priority, locality). Envoy reloads it when it is replaced by a\n\
                 # rename inside the watched directory.\n",
                self.mode
            )
        };
        vec![
            ExampleFile {
                name: format!("{}.yaml", self.mode),
                text: example_header(&self.mode, &self.description, &self.xds_file, self.wasm)
                    + &to_yaml(&self.bootstrap),
            },
            ExampleFile {
                name: self.xds_file.clone(),
                text: xds_comment + &to_yaml(&self.xds),
            },
        ]
    }

    /// The same configuration with the xDS file's resources inlined as
    /// static resources (`envoy --mode validate` does not read xDS files,
    /// this lets it check the clusters too).
    pub fn with_static_resources(&self) -> Value {
        let mut b = self.bootstrap.clone();
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Value::Object(m) = &mut v {
                m.remove("@type");
            }
            v
        };
        let resources: Vec<Value> = self
            .xds
            .get("resources")
            .and_then(Value::as_array)
            .map(|r| r.iter().map(strip).collect())
            .unwrap_or_default();
        if let Value::Object(m) = &mut b {
            m.remove("dynamic_resources");
        }
        if self.xds_file.contains(".cds.") {
            b["static_resources"]["clusters"] = Value::Array(resources);
        } else if let Some(Value::Array(clusters)) = b.pointer_mut("/static_resources/clusters") {
            for c in clusters.iter_mut() {
                if let (Value::Object(m), Some(cla)) = (c, resources.first()) {
                    m.remove("eds_cluster_config");
                    m.insert("type".into(), json!("STATIC"));
                    m.insert("load_assignment".into(), cla.clone());
                }
            }
        }
        b
    }
}

/// The example configurations: for each of `override-host`, `original-dst`,
/// `route-header` and `native-eds`, a bootstrap and its xDS file, with the
/// placeholders of [`EXAMPLE_WASM`], [`EXAMPLE_DIR`], 127.0.0.2-4:8080,
/// listener port 10000, admin port 9901, access log to /dev/stdout.
pub fn example_configs() -> Vec<ExampleConfig> {
    let placeholder = Layout::new("/LAYOUT");
    let fix = |v: &mut Value, xds_file: &str| {
        let xds_path = format!("{EXAMPLE_DIR}/{xds_file}");
        replace_strings(v, &placeholder.cds().to_string_lossy(), &xds_path);
        replace_strings(v, &placeholder.eds().to_string_lossy(), &xds_path);
        replace_strings(v, &placeholder.xds_dir().to_string_lossy(), EXAMPLE_DIR);
        replace_strings(
            v,
            &placeholder.access_log().to_string_lossy(),
            "/dev/stdout",
        );
        replace_strings(v, "/WASM", EXAMPLE_WASM);
    };
    let mut out = Vec::new();
    let steerings = [
        (
            "override-host",
            Steering::override_host(),
            "override_host load balancing policy reading the header",
        ),
        (
            "original-dst",
            Steering::original_dst(),
            "ORIGINAL_DST cluster reading the header",
        ),
        (
            "route-header",
            Steering::route_header(),
            "route cluster_header, one cluster per backend",
        ),
    ];
    for (mode, steering, what) in steerings {
        let plugin_config = json!({
            "trafficDistribution": "PreferClose",
            "steering": { "mode": mode, "header": steering.header() },
        })
        .to_string();
        let mut cfg = FilterModeConfig::new(steering, example_endpoints());
        cfg.node = example_node();
        cfg.wasm = Some(WasmFilter::new("/WASM", plugin_config));
        cfg.retry = Some(RetryPolicy::new(2, "connect-failure"));
        cfg.revision = "1".into();
        cfg.frontend = example_frontend();
        let xds_file = format!("{mode}.cds.yaml");
        let mut bootstrap = cfg.bootstrap(&placeholder);
        fix(&mut bootstrap, &xds_file);
        out.push(ExampleConfig {
            mode: mode.into(),
            description: what.into(),
            wasm: true,
            bootstrap,
            xds_file,
            xds: cds_file("1", &cfg.clusters()),
        });
    }
    let mut native = NativeModeConfig::new(example_endpoints());
    native.node = example_node();
    native.retry = Some(RetryPolicy {
        previous_hosts: true,
        ..RetryPolicy::new(2, "connect-failure,5xx")
    });
    native.healthy_panic_threshold = Some(0.0);
    native.outlier = Some(OutlierDetection {
        consecutive_5xx: 2,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    });
    native.frontend = example_frontend();
    let xds_file = "native-eds.eds.yaml".to_string();
    let mut bootstrap = native.bootstrap(&placeholder);
    fix(&mut bootstrap, &xds_file);
    out.push(ExampleConfig {
        mode: "native-eds".into(),
        description:
            "no filter: Envoy's own priorities, round robin and outlier detection on an EDS cluster"
                .into(),
        wasm: false,
        bootstrap,
        xds_file,
        xds: eds_file("1", &native.load_assignment()),
    });
    out
}

/// Every example file ([`ExampleConfig::files`] of [`example_configs`]).
pub fn example_files() -> Vec<ExampleFile> {
    example_configs()
        .iter()
        .flat_map(ExampleConfig::files)
        .collect()
}

fn example_header(mode: &str, what: &str, xds_file: &str, wasm: bool) -> String {
    let mut h = format!(
        "# Example Envoy bootstrap, {mode} mode: {what}.\n\
         # Generated by host_harness::envoy::config::example_files() (the same\n\
         # generators the scenario runner uses); regenerate with\n\
         #   LF_WRITE_EXAMPLES=1 cargo test -p host-harness --test envoy_blocks examples\n\
         # Run from the repository root:  envoy -c {EXAMPLE_DIR}/{mode}.yaml\n\
         # Placeholders (the runner writes real values into a temp dir):\n"
    );
    if wasm {
        h.push_str(&format!(
            "#   {EXAMPLE_WASM}  the built filter\n\
             #     (cargo build --profile wasm --target wasm32-wasip1 -p locality-failover)\n"
        ));
    }
    h.push_str(&format!(
        "#   {EXAMPLE_DIR}/{xds_file}  xDS file (path_config_source), watched\n\
         #     directory {EXAMPLE_DIR}\n\
         #   127.0.0.2-4:8080  the endpoints pod-a, pod-b, pod-c\n\
         #   listener 127.0.0.1:10000, admin 127.0.0.1:9901 (the runner uses port 0)\n\
         #   /dev/stdout  access log: U line per upstream attempt, D line per request\n"
    ));
    h
}

// ---------------------------------------------------------------------------
// YAML writer (for the readable examples). Block style; strings are quoted
// (JSON style, which YAML accepts) unless they are plainly safe.

/// Renders a JSON value as block-style YAML.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Keys in output order: `@type`, `name`, then the rest (alphabetical).
fn ordered(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |k: &str| match k {
        "@type" => 0,
        "name" => 1,
        _ => 2,
    };
    let mut v: Vec<(&String, &Value)> = m.iter().collect();
    v.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then_with(|| a.0.cmp(b.0)));
    v
}

fn write_map(out: &mut String, m: &Map<String, Value>, indent: usize) {
    for (k, v) in ordered(m) {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(k));
        out.push(':');
        write_value_after_key(out, v, indent);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, indent);
        }
        Value::String(s) if s.contains('\n') => {
            // Multi-line strings (access log formats) stay JSON-quoted.
            out.push(' ');
            out.push_str(&Value::String(s.clone()).to_string());
            out.push('\n');
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], indent: usize) {
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest indented under it.
                let mut first = true;
                for (k, v) in ordered(m) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    out.push_str(&yaml_string(k));
                    out.push(':');
                    write_value_after_key(out, v, indent + 2);
                }
            }
            v if is_block(v) => {
                out.push('\n');
                if let Value::Array(inner) = v {
                    write_seq(out, inner, indent + 2);
                }
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => yaml_string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

fn yaml_string(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "True", "False", "Yes",
        "No", "On", "Off", "Y", "N", "NULL", "Null", "TRUE", "FALSE", "YES", "NO", "ON", "OFF",
    ];
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
    let starts_ok = s
        .chars()
        .next()
        .map(|c| c.is_ascii_alphabetic() || c == '/' || c == '_')
        .unwrap_or(false);
    if safe_chars && starts_ok && !RESERVED.contains(&s) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(10)), "10s");
        assert_eq!(duration(Duration::from_millis(250)), "0.25s");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn yaml_quotes_what_it_must() {
        let v = json!({"@type": "x", "n": "n", "a": [{"b": 1, "c": "10.0.0.1:80"}], "e": {}, "f": ["s"]});
        let y = to_yaml(&v);
        assert!(y.contains("\"@type\": x\n"), "{y}");
        assert!(y.contains("\"n\": \"n\"\n"), "{y}");
        assert!(y.contains("a:\n- b: 1\n  c: \"10.0.0.1:80\"\n"), "{y}");
        assert!(y.contains("e: {}\n"), "{y}");
        assert!(y.contains("f:\n- s\n"), "{y}");
    }
}
