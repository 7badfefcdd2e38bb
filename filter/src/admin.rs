//! Reads Envoy's admin answer to
//! `GET /config_dump?include_eds&mask=static_endpoint_configs,dynamic_endpoint_configs&name_regex=...`
//! into the hosts of each cluster.
//!
//! Why `/config_dump` and not `/clusters?format=json`: it carries each
//! host's metadata (`istio.workload`, whose 5th field is Istio's cluster id,
//! and `istio.double_hbone`, which marks a remote network's gateway), Envoy
//! filters it by cluster name server-side (`name_regex`), and on Envoy 1.40
//! its `health_status` already folds in Envoy's own outlier ejection,
//! DRAINING and active health checking (measured: an ejected host reads
//! `UNHEALTHY`; see `filter/tests/data/`).
//!
//! Read through `serde_json::Value`, whose parser the filter already
//! carries: a typed `#[derive(Deserialize)]` view of this shape cost about
//! 60 KB of .wasm (measured), the Value walk almost nothing. `serde_json`
//! bounds recursion (128 levels), the caller bounds the size (the Value
//! takes about twice the body). Nothing here panics.

use serde_json::Value;

use crate::config::{LABEL_CLUSTER, LABEL_NETWORK};
use crate::inventory::{EndpointSpec, Labels};

/// Network label value given to remote-network hosts (double HBONE through
/// an east-west gateway): Envoy does not know their network, only that it
/// is not this waypoint's, so they rank as "another network".
pub const REMOTE_NETWORK: &str = "locality-failover/remote-network";

/// One host of a cluster as Envoy holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminHost {
    /// As Envoy keys the host: `ip:port`, or `envoy://<listener>/<id>`
    /// for an internal address.
    pub address: String,
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
    pub weight: u32,
    /// EDS priority (Istio computes it relative to this proxy's locality).
    pub priority: u32,
    /// `false` for UNHEALTHY, DRAINING, TIMEOUT (and outlier-ejected).
    pub healthy: bool,
    /// `topology.istio.io/cluster`, from `istio.workload`.
    pub cluster_id: Option<String>,
    /// Reached through `inner_connect_originate` / `istio.double_hbone`.
    pub remote_network: bool,
}

impl AdminHost {
    /// The inventory form. `own_network` is the proxy's network label:
    /// local hosts share it, remote ones get [`REMOTE_NETWORK`].
    pub fn to_spec(&self, own_network: Option<&str>) -> EndpointSpec {
        let mut labels = Labels::new();
        if let Some(id) = &self.cluster_id {
            labels.insert(LABEL_CLUSTER.to_string(), id.clone());
        }
        let network = if self.remote_network {
            Some(REMOTE_NETWORK)
        } else {
            own_network
        };
        if let Some(n) = network {
            labels.insert(LABEL_NETWORK.to_string(), n.to_string());
        }
        let locality = format!("{}/{}/{}", self.region, self.zone, self.sub_zone);
        EndpointSpec {
            address: self.address.clone(),
            labels,
            locality: Some(locality),
            weight: Some(self.weight.max(1)),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("not a config dump: {0}")]
    Json(String),
    #[error("cluster {cluster:?}: host {index}: {message}")]
    Host {
        cluster: String,
        index: usize,
        message: String,
    },
}

/// Every cluster in the dump with its hosts, in Envoy's order.
pub fn parse_config_dump(body: &[u8]) -> Result<Vec<(String, Vec<AdminHost>)>, AdminError> {
    let dump: Value = serde_json::from_slice(body).map_err(|e| AdminError::Json(e.to_string()))?;
    let configs = dump
        .get("configs")
        .and_then(Value::as_array)
        .ok_or_else(|| AdminError::Json("no `configs` list".into()))?;
    let mut out = Vec::new();
    for config in configs {
        for kind in ["static_endpoint_configs", "dynamic_endpoint_configs"] {
            let Some(entries) = config.get(kind) else {
                continue;
            };
            let entries = entries
                .as_array()
                .ok_or_else(|| AdminError::Json(format!("`{kind}` is not a list")))?;
            for cla in entries.iter().filter_map(|e| e.get("endpoint_config")) {
                out.push(cluster_hosts(cla)?);
            }
        }
    }
    Ok(out)
}

/// One `ClusterLoadAssignment`: its name and hosts.
fn cluster_hosts(cla: &Value) -> Result<(String, Vec<AdminHost>), AdminError> {
    let name = cla
        .get("cluster_name")
        .and_then(Value::as_str)
        .ok_or_else(|| AdminError::Json("an endpoint config without `cluster_name`".into()))?;
    let mut hosts = Vec::new();
    for group in list(cla, "endpoints") {
        let locality = group.get("locality");
        let field = |k: &str| {
            locality
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let priority = number(group, "priority").unwrap_or(0);
        for lb in list(group, "lb_endpoints") {
            let index = hosts.len();
            let address = lb
                .get("endpoint")
                .and_then(|e| e.get("address"))
                .ok_or_else(|| host_error(name, index, "no address"))?;
            let (key, listener) = address_key(address)
                .ok_or_else(|| host_error(name, index, "no socket or internal address"))?;
            let istio = lb
                .get("metadata")
                .and_then(|m| m.get("filter_metadata"))
                .and_then(|f| f.get("istio"));
            hosts.push(AdminHost {
                address: key,
                region: field("region"),
                zone: field("zone"),
                sub_zone: field("sub_zone"),
                weight: number(lb, "load_balancing_weight").unwrap_or(1),
                priority,
                healthy: healthy(lb.get("health_status").and_then(Value::as_str)),
                cluster_id: istio
                    .and_then(|i| i.get("workload"))
                    .and_then(Value::as_str)
                    .and_then(workload_cluster),
                remote_network: listener.as_deref() == Some("inner_connect_originate")
                    || istio.is_some_and(|i| i.get("double_hbone").is_some()),
            });
        }
    }
    Ok((name.to_string(), hosts))
}

fn host_error(cluster: &str, index: usize, message: &str) -> AdminError {
    AdminError::Host {
        cluster: cluster.to_string(),
        index,
        message: message.to_string(),
    }
}

/// The list under `key`, or nothing (proto3 JSON omits empty lists).
fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn number(value: &Value, key: &str) -> Option<u32> {
    value
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// The host's key as Envoy prints it (`Address::asString`): `ip:port`
/// (`[v6]:port`), or `envoy://<server_listener_name>/<endpoint_id>`; with
/// the internal listener's name.
fn address_key(address: &Value) -> Option<(String, Option<String>)> {
    if let Some(i) = address.get("envoy_internal_address") {
        let listener = i.get("server_listener_name").and_then(Value::as_str)?;
        let id = i
            .get("endpoint_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if listener.is_empty() {
            return None;
        }
        return Some((
            format!("envoy://{listener}/{id}"),
            Some(listener.to_string()),
        ));
    }
    let s = address.get("socket_address")?;
    let ip: std::net::IpAddr = s.get("address").and_then(Value::as_str)?.parse().ok()?;
    let port = u16::try_from(s.get("port_value").and_then(Value::as_u64)?).ok()?;
    Some((std::net::SocketAddr::new(ip, port).to_string(), None))
}

/// Envoy's load balancer counts HEALTHY and DEGRADED hosts (and UNKNOWN,
/// the default without health checking) as available; UNHEALTHY, DRAINING
/// and TIMEOUT are not.
fn healthy(status: Option<&str>) -> bool {
    !matches!(status, Some("UNHEALTHY" | "DRAINING" | "TIMEOUT"))
}

/// `name;namespace;canonical-name;revision;cluster-id` → the cluster id.
fn workload_cluster(workload: &str) -> Option<String> {
    workload
        .split(';')
        .nth(4)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
