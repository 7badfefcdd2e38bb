//! The admin parser on answers captured from Envoy 1.40.0 (`filter/tests/data/`,
//! see its README for how they were made).

use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// A STATIC-cluster-with-EDS dump after Envoy's own outlier detection
/// ejected 127.0.0.2 (its `/clusters` read `failed_outlier_check`).
const EJECTED: &[u8] = include_bytes!("../tests/data/config_dump_static_eds_ejected.json");
/// The same endpoints on a CDS cluster (`dynamic_endpoint_configs`), as on a waypoint.
const DYNAMIC: &[u8] = include_bytes!("../tests/data/config_dump_dynamic_eds.json");
/// No cluster matched the name filter.
const NONE: &[u8] = include_bytes!("../tests/data/config_dump_no_match.json");

fn only(body: &[u8]) -> (String, Vec<AdminHost>) {
    let mut clusters = parse_config_dump(body).unwrap();
    assert_eq!(clusters.len(), 1);
    clusters.remove(0)
}

#[test]
fn reads_internal_and_socket_addresses_as_envoy_keys_them() {
    let (name, hosts) = only(DYNAMIC);
    assert_eq!(name, "inbound-vip|8000|http|svc");
    let addresses: Vec<&str> = hosts.iter().map(|h| h.address.as_str()).collect();
    assert_eq!(
        addresses,
        [
            "envoy://connect_originate/127.0.0.2:18080",
            "envoy://connect_originate/127.0.0.3:18080",
            "127.0.0.4:18080",
            "envoy://inner_connect_originate/127.0.0.5:15008",
        ]
    );
}

#[test]
fn reads_locality_priority_weight_and_cluster_id() {
    let (_, hosts) = only(DYNAMIC);
    let a = &hosts[0];
    assert_eq!(
        (a.region.as_str(), a.zone.as_str(), a.sub_zone.as_str()),
        ("us-east-1", "us-east-1a", "")
    );
    assert_eq!((a.priority, a.weight), (0, 2));
    assert_eq!(a.cluster_id.as_deref(), Some("cluster-1"));
    let c = &hosts[2];
    assert_eq!(
        (c.zone.as_str(), c.sub_zone.as_str(), c.priority),
        ("us-east-1b", "rack1", 1)
    );
    assert_eq!(c.cluster_id.as_deref(), Some("cluster-2"));
}

#[test]
fn draining_and_eds_unhealthy_are_not_healthy() {
    let (_, hosts) = only(DYNAMIC);
    let health: Vec<bool> = hosts.iter().map(|h| h.healthy).collect();
    // 127.0.0.3 was sent DRAINING, 127.0.0.5 UNHEALTHY: Envoy 1.40 prints both UNHEALTHY.
    assert_eq!(health, [true, false, true, false]);
}

#[test]
fn envoys_own_outlier_ejection_reads_unhealthy() {
    let (_, hosts) = only(EJECTED);
    let a = hosts
        .iter()
        .find(|h| h.address == "envoy://connect_originate/127.0.0.2:18080")
        .unwrap();
    assert!(!a.healthy, "ejected host must not be a candidate");
    assert!(hosts
        .iter()
        .any(|h| h.address == "127.0.0.4:18080" && h.healthy));
}

#[test]
fn double_hbone_hosts_are_another_network() {
    let (_, hosts) = only(DYNAMIC);
    let remote: Vec<bool> = hosts.iter().map(|h| h.remote_network).collect();
    assert_eq!(remote, [false, false, false, true]);
    let spec = hosts[3].to_spec(Some("net1"));
    assert_eq!(
        spec.labels.get(LABEL_NETWORK).map(String::as_str),
        Some(REMOTE_NETWORK)
    );
    let local = hosts[0].to_spec(Some("net1"));
    assert_eq!(
        local.labels.get(LABEL_NETWORK).map(String::as_str),
        Some("net1")
    );
    assert_eq!(
        local.labels.get(LABEL_CLUSTER).map(String::as_str),
        Some("cluster-1")
    );
    assert_eq!(local.locality.as_deref(), Some("us-east-1/us-east-1a/"));
}

#[test]
fn no_matching_cluster_is_an_empty_answer() {
    assert_eq!(parse_config_dump(NONE).unwrap(), vec![]);
}

#[test]
fn garbage_truncated_and_wrong_shapes_are_errors_not_panics() {
    assert!(parse_config_dump(b"").is_err());
    assert!(parse_config_dump(b"<html>503</html>").is_err());
    let cut = &DYNAMIC[..DYNAMIC.len() / 2];
    assert!(parse_config_dump(cut).is_err());
    assert!(parse_config_dump(br#"{"configs": 5}"#).is_err());
    assert!(parse_config_dump(
        br#"{"configs": [{"dynamic_endpoint_configs": [{"endpoint_config": {"endpoints": []}}]}]}"#
    )
    .is_err());
    let deep = "[".repeat(100_000);
    assert!(parse_config_dump(deep.as_bytes()).is_err());
    let no_address = br#"{"configs": [{"dynamic_endpoint_configs": [{"endpoint_config":
        {"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {}}]}]}}]}]}"#;
    assert!(matches!(
        parse_config_dump(no_address),
        Err(AdminError::Host { index: 0, .. })
    ));
}

#[test]
fn workload_cluster_is_the_fifth_field() {
    assert_eq!(
        workload_cluster("a;b;c;d;Kubernetes").as_deref(),
        Some("Kubernetes")
    );
    assert_eq!(workload_cluster("a;b;c;d"), None);
    assert_eq!(workload_cluster("a;b;c;d;"), None);
}

#[test]
fn every_single_byte_mutation_of_a_capture_is_survived() {
    // Replacing any byte by a JSON-significant one never panics; an answer
    // that still parses names its hosts by Envoy's keys or is refused.
    for (i, _) in DYNAMIC.iter().enumerate() {
        for b in [b'"', b'{', b']', b'9', b'-', 0xff] {
            let mut body = DYNAMIC.to_vec();
            body[i] = b;
            if let Ok(clusters) = parse_config_dump(&body) {
                for (_, hosts) in clusters {
                    assert!(hosts.iter().all(|h| !h.address.is_empty()));
                }
            }
        }
    }
}
