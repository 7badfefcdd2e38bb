//! `inventory.cluster` and `steering.attemptCount`: declarations that save
//! host calls per request.

use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

fn settings(v: &Value) -> Result<Settings, ConfigError> {
    Settings::from_bytes(v.to_string().as_bytes())
}

fn error(v: &Value) -> String {
    match settings(v) {
        Ok(s) => panic!("expected an error for {v}, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn declarations_that_save_host_calls() {
    let s = settings(&json!({
        "inventory": {"cluster": "outbound|8000||svc"},
        "steering": {"attemptCount": "responseHeader"}
    }))
    .unwrap();
    assert_eq!(s.declared_cluster.as_deref(), Some("outbound|8000||svc"));
    assert_eq!(s.steering.attempt_count, AttemptCount::ResponseHeader);
    let s = settings(&json!({})).unwrap();
    assert_eq!(s.declared_cluster, None);
    assert_eq!(s.steering.attempt_count, AttemptCount::Property);
    // The envoy source polls the declared cluster.
    let s = settings(&json!({"inventory": {"source": "envoy", "cluster": "a"}})).unwrap();
    let InventorySource::Envoy(source) = s.inventory else {
        panic!("envoy source");
    };
    assert_eq!(source.clusters, vec!["a".to_string()]);
}

#[test]
fn bad_declarations_are_refused_naming_the_field() {
    for (config, field, value) in [
        (
            json!({"steering": {"attemptCount": "header"}}),
            "steering.attemptCount",
            "header",
        ),
        (
            json!({"inventory": {"cluster": ""}}),
            "inventory.cluster",
            "\"\"",
        ),
        (
            json!({"inventory": {"endpoints": [], "cluster": "a"}}),
            "inventory.cluster",
            "inventory.source is config",
        ),
        (
            json!({"inventory": {"source": "envoy", "cluster": "a", "clusters": ["a", "b"]}}),
            "inventory.clusters",
            "\"b\"",
        ),
    ] {
        let e = error(&config);
        assert!(e.contains(field) && e.contains(value), "{config}: {e}");
    }
}
