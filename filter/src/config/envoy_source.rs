//! `inventory.source: "envoy"`: the inventory is read from Envoy's own
//! admin (`/config_dump` with EDS) through a cluster of the bootstrap.
//!
//! ```json
//! "inventory": {"source": "envoy", "adminCluster": "prometheus_stats",
//!               "pollInterval": "1s", "timeout": "2s",
//!               "maxResponseBytes": 4194304, "clusters": ["inbound-vip|8000|http|svc"]}
//! ```
//! Every field but `source` is optional.

use std::time::Duration;

use super::{duration_field, field_error, ConfigError, InventoryConfig};

/// Istio's bootstrap cluster that points at the Envoy admin (127.0.0.1:15000).
pub const DEFAULT_ADMIN_CLUSTER: &str = "prometheus_stats";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest accepted `timeout`; also caps its default (the poll interval),
/// so that a poll never waits past the next one by default.
pub const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// Enough for a few thousand endpoints of pretty-printed config dump.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Largest accepted `maxResponseBytes`: the body is copied into the VM.
pub const MAX_RESPONSE_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Bounds of `pollInterval`: faster loads the admin for nothing, slower
/// leaves the inventory stale for minutes.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// Most clusters polled (the name filter is one regex in the URL).
pub const MAX_CLUSTERS: usize = 64;

/// Validated settings of the `envoy` inventory source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoySource {
    /// The bootstrap cluster that reaches the admin.
    pub admin_cluster: String,
    pub poll_interval: Duration,
    pub timeout: Duration,
    /// Answers declaring a larger body are dropped unread.
    pub max_response_bytes: usize,
    /// Clusters to read; empty means the clusters requests were routed to.
    pub clusters: Vec<String>,
}

/// Validates the `envoy` source fields of `inventory`.
pub(super) fn envoy_source(inv: &InventoryConfig) -> Result<EnvoySource, ConfigError> {
    if inv.endpoints.is_some() {
        return Err(field_error(
            "inventory.endpoints",
            "given, but inventory.source is envoy",
        ));
    }
    let admin_cluster = inv
        .admin_cluster
        .clone()
        .unwrap_or_else(|| DEFAULT_ADMIN_CLUSTER.to_string());
    if admin_cluster.is_empty() || admin_cluster.len() > 256 {
        return Err(field_error(
            "inventory.adminCluster",
            format!("{admin_cluster:?} must be 1 to 256 characters"),
        ));
    }
    let poll_interval = duration_field(
        "inventory.pollInterval",
        inv.poll_interval.as_ref(),
        DEFAULT_POLL_INTERVAL,
    )?;
    if !(MIN_POLL_INTERVAL..=MAX_POLL_INTERVAL).contains(&poll_interval) {
        return Err(field_error(
            "inventory.pollInterval",
            format!(
                "{:?} is not between 100ms and 300s",
                inv.poll_interval.as_deref().unwrap_or_default()
            ),
        ));
    }
    let timeout = duration_field(
        "inventory.timeout",
        inv.timeout.as_ref(),
        poll_interval.min(MAX_POLL_TIMEOUT),
    )?;
    if timeout > MAX_POLL_TIMEOUT {
        return Err(field_error(
            "inventory.timeout",
            format!(
                "{:?} is longer than 60s",
                inv.timeout.as_deref().unwrap_or_default()
            ),
        ));
    }
    let max_response_bytes = inv.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    if !(1024..=MAX_RESPONSE_BYTES_LIMIT).contains(&max_response_bytes) {
        return Err(field_error(
            "inventory.maxResponseBytes",
            format!("{max_response_bytes} is not in 1024..={MAX_RESPONSE_BYTES_LIMIT}"),
        ));
    }
    // A declared `cluster` is the one cluster polled unless `clusters` says it.
    let clusters = inv
        .clusters
        .clone()
        .or_else(|| inv.cluster.clone().map(|c| vec![c]))
        .unwrap_or_default();
    if clusters.len() > MAX_CLUSTERS {
        return Err(field_error(
            "inventory.clusters",
            format!("{} clusters, more than {MAX_CLUSTERS}", clusters.len()),
        ));
    }
    if let Some(i) = clusters.iter().position(|c| c.is_empty() || c.len() > 256) {
        return Err(field_error(
            format!("inventory.clusters[{i}]"),
            "must be 1 to 256 characters",
        ));
    }
    Ok(EnvoySource {
        admin_cluster,
        poll_interval,
        timeout,
        max_response_bytes,
        clusters,
    })
}

/// The `envoy`-only fields, refused with another source so a typo in
/// `source` is not silently a different inventory.
pub(super) fn refuse_envoy_fields(inv: &InventoryConfig, source: &str) -> Result<(), ConfigError> {
    let given = [
        ("inventory.adminCluster", inv.admin_cluster.is_some()),
        ("inventory.pollInterval", inv.poll_interval.is_some()),
        ("inventory.timeout", inv.timeout.is_some()),
        (
            "inventory.maxResponseBytes",
            inv.max_response_bytes.is_some(),
        ),
        ("inventory.clusters", inv.clusters.is_some()),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(field_error(
            *field,
            format!("given, but inventory.source is {source}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "envoy_source_tests.rs"]
mod tests;
