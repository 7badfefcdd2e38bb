//! The Envoy configurations measured: (a) native, (b) no-op wasm, (c) the
//! filter, on the guide's four endpoints.

use crate::BenchError;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::fixtures::{client_labels, declared_plugin_config, plugin_config, NET1};
use host_harness::envoy::{
    Endpoint as EnvoyEndpoint, FilterModeConfig, Layout, LbPolicy as EnvoyLb, NativeModeConfig,
    Node, OutlierDetection, Steering, WasmFilter,
};
use locality_failover::config::{LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use serde_json::Value;

/// The guide's four endpoints: P0 us-east-1a, P1 us-east-1b, P2 us-west-2a/b.
pub(crate) fn guide_endpoints(addrs: &[SocketAddr]) -> Vec<EnvoyEndpoint> {
    let layout = [
        ("in-ambient-abc12", NET1, "us-east-1", "us-east-1a", 0),
        ("in-ambient-def34", NET1, "us-east-1", "us-east-1b", 1),
        (
            "in-ambient-xyz98",
            "cluster2-network",
            "us-west-2",
            "us-west-2a",
            2,
        ),
        (
            "in-ambient-uvw56",
            "cluster2-network",
            "us-west-2",
            "us-west-2b",
            2,
        ),
    ];
    layout
        .iter()
        .zip(addrs)
        .map(|((name, net, region, zone, p), a)| {
            EnvoyEndpoint::new(*name, *a)
                .with_label(LABEL_NETWORK, *net)
                .with_label(LABEL_REGION, *region)
                .with_label(LABEL_ZONE, *zone)
                .with_priority(*p)
        })
        .collect()
}

pub(crate) fn guide_node() -> Node {
    Node::with_labels(client_labels())
}

/// Istio's translation of the guide's outlierDetection.
pub(crate) fn istio_outlier() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: 5,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(180),
        max_ejection_percent: 50,
        ..OutlierDetection::default()
    }
}

/// Removes the access logs the generators add (file I/O per request would
/// be the same in every configuration and only dilute the differences).
pub(crate) fn strip_access_logs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("access_log");
            m.remove("upstream_log");
            m.values_mut().for_each(strip_access_logs);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_access_logs),
        _ => {}
    }
}

/// Puts a wasm filter before the router of the (only) listener.
pub(crate) fn insert_http_filter(bootstrap: &mut Value, filter: Value) -> bool {
    let Some(Value::Array(filters)) = bootstrap.pointer_mut(
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
    ) else {
        return false;
    };
    filters.insert(0, filter);
    true
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Variant {
    Native,
    Noop,
    /// The filter as a single-cluster plain Envoy runs it: cluster and
    /// attempt count declared.
    Filter,
    /// The filter with nothing declared (cluster name and attempt count
    /// read per request, as on a waypoint).
    FilterUndeclared,
}

impl Variant {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::Native => "(a) native EDS priorities + outlier detection",
            Variant::Noop => "(b) no-op Rust wasm filter (sets 1 header)",
            Variant::Filter => "(c) locality-failover, override-host, inventory.cluster + attemptCount: responseHeader declared",
            Variant::FilterUndeclared => "(c') locality-failover, override-host, nothing declared (cluster name and attempt count read per request)",
        }
    }
    pub(crate) fn short(self) -> &'static str {
        match self {
            Variant::Native => "a",
            Variant::Noop => "b",
            Variant::Filter => "c",
            Variant::FilterUndeclared => "cu",
        }
    }
}

pub(crate) fn generate(
    variant: Variant,
    addrs: &[SocketAddr],
    layout: &Layout,
    filter_wasm: &Path,
    noop_wasm: &Path,
) -> Result<host_harness::envoy::Generated, BenchError> {
    let endpoints = guide_endpoints(addrs);
    let mut generated = match variant {
        Variant::Native | Variant::Noop => {
            let mut cfg = NativeModeConfig::new(endpoints);
            cfg.node = guide_node();
            cfg.lb_policy = EnvoyLb::RoundRobin;
            cfg.locality_weighted = true;
            cfg.healthy_panic_threshold = Some(0.0);
            cfg.outlier = Some(istio_outlier());
            let mut g = cfg.generate(layout);
            if variant == Variant::Noop {
                let noop = WasmFilter {
                    root_id: "noop".into(),
                    vm_id: "noop".into(),
                    ..WasmFilter::new(noop_wasm, "")
                };
                if !insert_http_filter(&mut g.bootstrap, noop.to_json()) {
                    return Err("cannot place the no-op filter".into());
                }
            }
            g
        }
        Variant::Filter | Variant::FilterUndeclared => {
            let mut cfg = FilterModeConfig::new(Steering::override_host(), endpoints);
            cfg.node = guide_node();
            let config = match variant {
                Variant::Filter => declared_plugin_config("ROUND_ROBIN", &cfg.cluster_name),
                _ => plugin_config("ROUND_ROBIN"),
            };
            cfg.wasm = Some(WasmFilter::new(filter_wasm, config.to_string()));
            cfg.generate(layout)
        }
    };
    strip_access_logs(&mut generated.bootstrap);
    Ok(generated)
}
