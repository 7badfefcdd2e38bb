//! Every Envoy property the filter reads, named once.
//!
//! Paths are Envoy's CEL attribute paths as proxy-wasm `get_property` takes
//! them (Envoy >= 1.33 serves node and cluster data only under `xds.*`).
//! Values come back serialized: strings as raw UTF-8, integers as 8-byte
//! little endian (see [`crate::host::decode`]).

/// The routed cluster's name; set once the route is resolved.
pub const CLUSTER_NAME: &[&str] = &["xds", "cluster_name"];
/// The routed cluster's `Metadata` protobuf.
pub const CLUSTER_METADATA: &[&str] = &["xds", "cluster_metadata"];
/// The HTTP status sent downstream (0 when none).
pub const RESPONSE_CODE: &[&str] = &["response", "code"];
/// Envoy's response flags bitmask (`UF`, `UH`, `URX`, ...).
pub const RESPONSE_FLAGS: &[&str] = &["response", "flags"];
/// The last upstream host tried, as Envoy keys it.
pub const UPSTREAM_ADDRESS: &[&str] = &["upstream", "address"];
/// How many upstream attempts the router made.
pub const ATTEMPT_COUNT: &[&str] = &["upstream", "request_attempt_count"];
/// Istio's network of the proxy.
pub const NODE_NETWORK: &[&str] = &["xds", "node", "metadata", "NETWORK"];

/// The inventory's `revision` leaf inside the cluster metadata.
pub fn metadata_revision(namespace: &str) -> [&str; 5] {
    [
        "xds",
        "cluster_metadata",
        "filter_metadata",
        namespace,
        "revision",
    ]
}

/// One of the node's locality fields: `region`, `zone` or `sub_zone`.
pub fn node_locality(leaf: &str) -> [&str; 4] {
    ["xds", "node", "locality", leaf]
}

/// One node label (`xds.node.metadata.LABELS.<name>`), read leaf by leaf:
/// the whole node is tens of kilobytes.
pub fn node_label(name: &str) -> [&str; 5] {
    ["xds", "node", "metadata", "LABELS", name]
}
