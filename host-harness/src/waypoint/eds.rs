//! The `inbound-vip` cluster's endpoints as istiod sends them to a waypoint,
//! with the scenario's pods in place of the cluster's pods.
//!
//! Each pod is an internal address `connect_originate/<ip:port>` (the
//! loopback address of its stand-in), with the two metadata keys istiod
//! writes (`envoy.filters.listener.original_dst.local` and
//! `istio.workload`), grouped into one `LocalityLbEndpoints` per (priority,
//! locality) as `endpoint_builder.go` groups them. Priorities are the
//! engine's ranking of the present pods (`ranking.rs`; the golden tests
//! compare it with istiod's for the guide's cases).
//!
//! Updates replace the EDS file by an atomic rename in the watched
//! directory (Envoy's `path_config_source` reacts to the rename), then wait
//! until `/clusters` shows exactly the new hosts at their priorities.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::envoy::config::Layout;
use crate::envoy::config::{eds_file, group_endpoints, locality_of, write_atomically, Endpoint};
use crate::envoy::EnvoyProcess;
use crate::error::{HarnessError, Result};

/// The internal listener every in-mesh pod is reached through.
pub const CONNECT_ORIGINATE: &str = "connect_originate";
/// The internal listener istiod (1.28+) sends remote-network endpoints
/// through: each stands for the east-west gateway of one locality group.
pub const INNER_CONNECT_ORIGINATE: &str = "inner_connect_originate";
/// `istio.double_hbone.hbone_target_address` of a remote-network endpoint:
/// the service the remote gateway resolves.
const HBONE_TARGET: &str = "in-ambient.httpbin.svc.cluster.local:8000";
/// Namespace and canonical service of the guide's pods (`istio.workload`).
const WORKLOAD_NAMESPACE: &str = "httpbin";
const CANONICAL_SERVICE: &str = "in-ambient";
/// istiod's cluster id when a pod carries no `topology.istio.io/cluster`:
/// the guide's cluster 1 for the waypoint's own network, cluster 2 for a
/// pod behind an east-west gateway (as in the `multi-network` golden case).
const DEFAULT_CLUSTER_ID: &str = "cluster1";
const DEFAULT_REMOTE_CLUSTER_ID: &str = "cluster2";
const LABEL_CLUSTER: &str = "topology.istio.io/cluster";

/// `envoy://<listener>/<ip:port>`: how Envoy names an internal host (in
/// `/clusters`, the access log and the stateful-session header).
pub fn host_name(listener: &str, address: &str) -> String {
    format!("envoy://{listener}/{address}")
}

/// One `LbEndpoint` as `buildEnvoyLbEndpoint` writes it; a remote-network
/// pod as `EndpointsByNetworkFilter` replaces it (its group's gateway, with
/// `double_hbone` metadata and only the cluster id in `istio.workload`).
fn lb_endpoint(e: &Endpoint, remote: bool) -> Value {
    let addr = e.address.to_string();
    let default_id = if remote {
        DEFAULT_REMOTE_CLUSTER_ID
    } else {
        DEFAULT_CLUSTER_ID
    };
    let cluster_id = e
        .labels
        .get(LABEL_CLUSTER)
        .map_or(default_id, String::as_str);
    let (listener, istio) = if remote {
        (
            INNER_CONNECT_ORIGINATE,
            json!({ "workload": format!(";;;;{cluster_id}"),
                    "double_hbone": { "hbone_target_address": HBONE_TARGET } }),
        )
    } else {
        (
            CONNECT_ORIGINATE,
            json!({ "workload": format!(
                "{};{WORKLOAD_NAMESPACE};{CANONICAL_SERVICE};;{cluster_id}", e.name) }),
        )
    };
    json!({
        "endpoint": { "address": { "envoy_internal_address": {
            "server_listener_name": listener,
            "endpoint_id": addr,
        }}},
        "metadata": { "filter_metadata": {
            "envoy.filters.listener.original_dst": { "local": addr },
            "istio": istio,
        }},
        "load_balancing_weight": e.weight.max(1),
    })
}

/// The `ClusterLoadAssignment` of `cluster` for ranked endpoints (their
/// `priority`, `weight` and `locality_weight` set): one group per
/// (priority, locality) in order of priority then first appearance; each
/// group's `load_balancing_weight` is the sum of its members' weights, as
/// istiod writes it, or the `distribute` weight when one is set. Endpoints
/// named in `remote` are on another network than the waypoint.
pub fn load_assignment(cluster: &str, endpoints: &[Endpoint], remote: &BTreeSet<String>) -> Value {
    let groups = group_endpoints(endpoints, |e| (e.priority, locality_of(e)));
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|((priority, (region, zone, sub_zone)), members)| {
            let weight = members
                .first()
                .and_then(|e| e.locality_weight)
                .unwrap_or_else(|| members.iter().map(|e| e.weight.max(1)).sum());
            let mut g = json!({
                "locality": { "region": region, "zone": zone, "sub_zone": sub_zone },
                "lb_endpoints": members
                    .iter()
                    .map(|e| lb_endpoint(e, remote.contains(&e.name)))
                    .collect::<Vec<_>>(),
                "load_balancing_weight": weight.max(1),
            });
            if priority > 0 {
                g["priority"] = json!(priority);
            }
            g
        })
        .collect();
    json!({ "cluster_name": cluster, "endpoints": groups })
}

/// `(endpoint_id, priority)` of every host of a load assignment.
pub fn expected_hosts(cla: &Value) -> BTreeSet<(String, u32)> {
    let mut out = BTreeSet::new();
    for g in cla["endpoints"].as_array().into_iter().flatten() {
        let p = g["priority"].as_u64().unwrap_or(0) as u32;
        for e in g["lb_endpoints"].as_array().into_iter().flatten() {
            if let Some(id) = e
                .pointer("/endpoint/address/envoy_internal_address/endpoint_id")
                .and_then(Value::as_str)
            {
                out.insert((id.to_string(), p));
            }
        }
    }
    out
}

/// One host of a cluster as `/clusters?format=json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalHost {
    /// `endpoint_id` (`ip:port`) of an internal address, or `ip:port`.
    pub id: String,
    pub priority: u32,
    pub outlier_ejected: bool,
}

/// The hosts of `cluster`, from the admin's `/clusters?format=json`.
pub fn hosts(envoy: &EnvoyProcess, cluster: &str) -> Result<Vec<InternalHost>> {
    let text = envoy
        .admin_get("/clusters?format=json")
        .map_err(HarnessError::envoy("admin /clusters"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| HarnessError::Traffic(format!("admin /clusters: {e}")))?;
    let c = v["cluster_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(cluster))
        .ok_or_else(|| HarnessError::unknown("cluster in admin /clusters", cluster))?;
    let mut out = Vec::new();
    for h in c["host_statuses"].as_array().into_iter().flatten() {
        let a = &h["address"];
        let id = match (
            a.pointer("/envoy_internal_address/endpoint_id"),
            a.pointer("/socket_address/address"),
        ) {
            (Some(Value::String(id)), _) => id.clone(),
            (_, Some(Value::String(ip))) => {
                format!(
                    "{ip}:{}",
                    a.pointer("/socket_address/port_value").unwrap_or(&json!(0))
                )
            }
            _ => continue,
        };
        out.push(InternalHost {
            id,
            priority: h["priority"].as_u64().unwrap_or(0) as u32,
            outlier_ejected: h
                .pointer("/health_status/failed_outlier_check")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(out)
}

/// Writes version `version` of the EDS file and waits until Envoy took it
/// (`cluster.<stat name>.update_success` went up, `update_rejected` did
/// not) and `/clusters` lists exactly its hosts at their priorities.
/// `stat_name` is the cluster's `alt_stat_name` (istiod sets one: the
/// name with a `;` appended).
pub fn apply(
    envoy: &EnvoyProcess,
    layout: &Layout,
    stat_name: &str,
    cla: &Value,
    version: u64,
    timeout: Duration,
) -> Result<()> {
    let name = cla["cluster_name"].as_str().unwrap_or_default().to_string();
    let ok_stat = format!("cluster.{stat_name}.update_success");
    let bad_stat = format!("cluster.{stat_name}.update_rejected");
    let ok_before = envoy.stat(&ok_stat).unwrap_or(0);
    let bad_before = envoy.stat(&bad_stat).unwrap_or(0);
    let text = serde_json::to_string_pretty(&eds_file(&version.to_string(), cla))
        .map_err(|e| HarnessError::Traffic(format!("EDS version {version}: {e}")))?;
    write_atomically(&layout.eds(), &text).map_err(HarnessError::io("EDS file"))?;
    let want = expected_hosts(cla);
    let mut rejected = false;
    let applied = envoy.wait_for(timeout, |e| {
        rejected = e.stat(&bad_stat).unwrap_or(0) > bad_before;
        rejected
            || (e.stat(&ok_stat).unwrap_or(0) > ok_before
                && hosts(e, &name)
                    .map(|hs| {
                        hs.into_iter()
                            .map(|h| (h.id, h.priority))
                            .collect::<BTreeSet<_>>()
                            == want
                    })
                    .unwrap_or(false))
    });
    if rejected {
        return Err(HarnessError::Traffic(format!(
            "EDS version {version} rejected; log tail:\n{}",
            envoy.log_tail(20)
        )));
    }
    if !applied {
        return Err(HarnessError::Traffic(format!(
            "EDS version {version}: hosts of {name} not applied after {timeout:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::config::{LABEL_REGION, LABEL_ZONE};
    use std::net::SocketAddr;

    fn ep(name: &str, last: u8, zone: &str, priority: u32) -> Endpoint {
        Endpoint::new(name, SocketAddr::from(([127, 0, 0, last], 8080)))
            .with_label(LABEL_REGION, "us-east-1")
            .with_label(LABEL_ZONE, zone)
            .with_priority(priority)
    }

    #[test]
    fn groups_by_priority_and_locality_with_internal_addresses() {
        let eps = [
            ep("b", 3, "us-east-1b", 1),
            ep("a", 2, "us-east-1a", 0),
            ep("c", 4, "us-east-1b", 1).with_weight(3),
        ];
        let remote: BTreeSet<String> = ["c".to_string()].into_iter().collect();
        let cla = load_assignment("inbound-vip|8000|http|x", &eps, &remote);
        let groups = cla["endpoints"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert!(groups[0].get("priority").is_none());
        assert_eq!(groups[0]["locality"]["zone"], "us-east-1a");
        assert_eq!(groups[1]["priority"], 1);
        assert_eq!(groups[1]["load_balancing_weight"], 4);
        let first = &groups[1]["lb_endpoints"][0];
        assert_eq!(
            first["endpoint"]["address"]["envoy_internal_address"],
            json!({"server_listener_name": "connect_originate", "endpoint_id": "127.0.0.3:8080"})
        );
        assert_eq!(
            first["metadata"]["filter_metadata"]["envoy.filters.listener.original_dst"]["local"],
            "127.0.0.3:8080"
        );
        assert_eq!(
            first["metadata"]["filter_metadata"]["istio"]["workload"],
            "b;httpbin;in-ambient;;cluster1"
        );
        let gw = &groups[1]["lb_endpoints"][1];
        assert_eq!(
            gw["endpoint"]["address"]["envoy_internal_address"]["server_listener_name"],
            "inner_connect_originate"
        );
        assert_eq!(
            gw["metadata"]["filter_metadata"]["istio"]["workload"],
            ";;;;cluster2"
        );
        let want: BTreeSet<(String, u32)> = [
            ("127.0.0.2:8080".to_string(), 0),
            ("127.0.0.3:8080".to_string(), 1),
            ("127.0.0.4:8080".to_string(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(expected_hosts(&cla), want);
    }

    #[test]
    fn host_names_are_envoys() {
        assert_eq!(
            host_name(CONNECT_ORIGINATE, "127.0.0.2:8080"),
            "envoy://connect_originate/127.0.0.2:8080"
        );
    }
}
