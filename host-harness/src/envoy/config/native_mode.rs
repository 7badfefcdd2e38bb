//! Native mode: an EDS cluster fed from a file, Envoy's own load balancer
//! and outlier detection, no filter.

use super::*;

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
