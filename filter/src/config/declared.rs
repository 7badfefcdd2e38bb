//! Declarations an operator may make to save host calls per request:
//! `inventory.cluster` (the one cluster every route goes to) and
//! `steering.attemptCount` (where the attempt count comes from). The filter
//! uses them in `filter::routed` and `filter::on_response_headers`.

use super::{field_error, ConfigError, InventoryConfig};

/// Where the filter learns how many attempts Envoy made for a request,
/// which tells a first-try answer from a retried one (retry attribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptCount {
    /// `upstream.request_attempt_count`, a property read in `on_log`.
    /// Works on any route.
    Property,
    /// `x-envoy-attempt-count` in the response headers, read with
    /// `:status` in one host call. Only for routes (or virtual hosts) with
    /// `include_attempt_count_in_response: true`: Envoy's router then
    /// writes the header over anything the upstream sent. A response
    /// without it (a local reply, a route without the option) falls back
    /// to the property.
    ResponseHeader,
}

/// `inventory.cluster`: a cluster name, for the sources that look the
/// inventory up by cluster (an inline inventory serves every request as
/// it is).
pub(super) fn declared_cluster(inv: &InventoryConfig, source: &str) -> Result<(), ConfigError> {
    match &inv.cluster {
        None => Ok(()),
        Some(_) if source == "config" => Err(field_error(
            "inventory.cluster",
            "given, but inventory.source is config (an inline inventory already steers every request without reading its cluster)",
        )),
        Some(c) if c.is_empty() || c.len() > 256 => Err(field_error(
            "inventory.cluster",
            format!("{c:?} must be 1 to 256 characters"),
        )),
        Some(c) => match &inv.clusters {
            Some(list) if list.iter().any(|l| l != c) => Err(field_error(
                "inventory.clusters",
                format!("{list:?} names another cluster than inventory.cluster {c:?}"),
            )),
            _ => Ok(()),
        },
    }
}

pub(super) fn attempt_count(value: Option<&str>) -> Result<AttemptCount, ConfigError> {
    match value.unwrap_or("property") {
        "property" => Ok(AttemptCount::Property),
        "responseHeader" => Ok(AttemptCount::ResponseHeader),
        other => Err(field_error(
            "steering.attemptCount",
            format!("{other:?} is not one of property, responseHeader"),
        )),
    }
}
