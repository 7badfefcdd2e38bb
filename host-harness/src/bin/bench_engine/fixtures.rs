//! The guide's setup: labels, DestinationRule, synthetic inventories.

use std::collections::BTreeMap;

use locality_failover::config::{Settings, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use locality_failover::inventory::{EndpointSpec, Inventory, Labels};
use serde_json::{json, Value};

pub(crate) const NET1: &str = "cluster1-network";
pub(crate) const REGIONS: [(&str, &str); 3] = [
    ("us-east-1", "cluster1-network"),
    ("us-west-2", "cluster2-network"),
    ("eu-west-1", "cluster3-network"),
];
pub(crate) const ZONES: [&str; 3] = ["a", "b", "c"];

pub(crate) fn client_labels() -> Labels {
    [
        (LABEL_NETWORK, NET1),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The guide's step-6 DestinationRule `trafficPolicy`, with the
/// failoverPriority order the README recommends ([network, region, zone]:
/// P0 same zone, P1 same region, P2 other networks/regions).
pub(crate) fn traffic_policy(lb: &str) -> Value {
    json!({
        "loadBalancer": {
            "simple": lb,
            "localityLbSetting": {
                "enabled": true,
                "failoverPriority": [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]
            }
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5,
            "interval": "10s",
            "baseEjectionTime": "3m",
            "maxEjectionPercent": 50
        }
    })
}

pub(crate) fn plugin_config(lb: &str) -> Value {
    json!({
        "trafficPolicy": traffic_policy(lb),
        "inventory": { "source": "clusterMetadata", "namespace": "locality-failover" },
        "steering": { "mode": "override-host", "header": "x-locality-failover-hosts", "maxHosts": 3 }
    })
}

/// [`plugin_config`] with what a filter whose every route goes to one
/// cluster, on routes with `include_attempt_count_in_response`, can
/// declare: `inventory.cluster` (no `xds.cluster_name` read per request)
/// and `steering.attemptCount: responseHeader` (the attempt count comes
/// with `:status`, no property read in `on_log`).
pub(crate) fn declared_plugin_config(lb: &str, cluster: &str) -> Value {
    let mut config = plugin_config(lb);
    config["inventory"]["cluster"] = json!(cluster);
    config["steering"]["attemptCount"] = json!("responseHeader");
    config
}

/// Labels of endpoint `i` of a synthetic inventory: 3 regions x 3 zones,
/// endpoints dealt round-robin over the 9 localities.
pub(crate) fn synthetic_labels(i: usize) -> BTreeMap<String, String> {
    let (region, network) = REGIONS[(i / ZONES.len()) % REGIONS.len()];
    let zone = format!("{region}{}", ZONES[i % ZONES.len()]);
    [
        (LABEL_NETWORK.to_string(), network.to_string()),
        (LABEL_REGION.to_string(), region.to_string()),
        (LABEL_ZONE.to_string(), zone),
    ]
    .into_iter()
    .collect()
}

pub(crate) fn synthetic_address(i: usize) -> String {
    format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

pub(crate) fn synthetic_specs(n: usize) -> Vec<EndpointSpec> {
    (0..n)
        .map(|i| EndpointSpec {
            address: synthetic_address(i),
            name: Some(format!("ep-{i}")),
            labels: synthetic_labels(i),
            weight: Some(1),
            ..Default::default()
        })
        .collect()
}

pub(crate) fn synthetic_inventory(n: usize) -> Inventory {
    Inventory::from_specs(&synthetic_specs(n)).unwrap_or_default()
}

pub(crate) fn inventory_json(specs: &[EndpointSpec], revision: &str) -> Value {
    json!({ "revision": revision, "endpoints": specs })
}

pub(crate) fn settings(lb: &str) -> Settings {
    match Settings::from_bytes(plugin_config(lb).to_string().as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: configuration refused: {e}");
            std::process::exit(2);
        }
    }
}
