//! Filter mode: the wasm filter before the router, steering, CDS-file clusters.

use super::*;

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
