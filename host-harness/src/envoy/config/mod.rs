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

mod examples;
mod filter_mode;
mod native_mode;
mod xds;
mod yaml;

pub use examples::*;
pub use filter_mode::*;
pub use native_mode::*;
pub use xds::*;
pub use yaml::*;

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

pub(super) fn absolute(p: &Path) -> PathBuf {
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
