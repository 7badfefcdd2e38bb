//! What ships beside the filter, checked: the Istio manifests
//! (`envoy/istio/`), the OCI image (`scripts/oci.sh`, `envoy/oci/`), the
//! docker-compose demo against the `make demo` configuration
//! (`envoy/docker-compose.yaml`, `envoy/demo/`), and the `lint` command.
//!
//! One module per thing shipped: [`istio`], [`oci`], [`compose`], [`lint`].
//!
//! Tests that need a built filter (`build/locality_failover.wasm`) or an
//! `envoy` binary print `SKIP` and pass without them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use host_harness::envoy::accesslog::{DOWNSTREAM_FORMAT, UPSTREAM_FORMAT};
use host_harness::envoy::{envoy_binary, TempDir};
use locality_failover::config::{Settings, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use locality_failover::lint::lint_json;
use serde::Deserialize;
use serde_json::{json, Value};

fn root() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&r).unwrap_or(r)
}

/// `a/b/../c` -> `a/c`, without touching the file system (the filter may
/// not be built yet).
fn norm(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file, as JSON values (parsed by a YAML parser,
/// not as text).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: one YAML document expected");
    docs.remove(0)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .collect()
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer}: no string in {v}"))
}

/// The guide's step-6 DestinationRule `trafficPolicy`, with its label order.
fn guide_traffic_policy(order: &[&str]) -> Value {
    json!({
        "loadBalancer": {
            "localityLbSetting": { "enabled": true, "failoverPriority": order },
            "simple": "ROUND_ROBIN"
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m",
            "maxEjectionPercent": 50
        }
    })
}

const GUIDE_ORDER: [&str; 2] = [LABEL_ZONE, LABEL_REGION];
const FIXED_ORDER: [&str; 3] = [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE];

mod compose;
mod istio;
mod lint;
mod oci;
