//! The golden xDS that istiod's own generator made for the guide's
//! waypoint (`tests/golden/istiod/<case>/`, `make istiod-golden`): the
//! listeners, clusters, endpoints and ECDS the waypoint-shaped Envoy is
//! rendered from.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The service's EDS cluster (and HTTP filter chain) in every golden case.
pub const SERVICE_CLUSTER: &str = "inbound-vip|8000|http|in-ambient.httpbin.svc.cluster.local";

/// One golden case, parsed.
#[derive(Debug, Clone)]
pub struct Golden {
    pub case: String,
    pub listeners: Vec<Value>,
    pub clusters: Vec<Value>,
    pub endpoints: Vec<Value>,
    pub ecds: Vec<Value>,
    pub meta: Value,
}

/// `tests/golden/istiod` of the workspace.
pub fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("golden")
        .join("istiod")
}

/// What is wrong with a golden file, or with the configuration rendered
/// from it: the shape istiod's output was expected to have, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

impl From<String> for ShapeError {
    fn from(message: String) -> Self {
        ShapeError(message)
    }
}

impl From<&str> for ShapeError {
    fn from(message: &str) -> Self {
        ShapeError(message.to_string())
    }
}

fn read_json(dir: &Path, file: &str) -> Result<Value, ShapeError> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| ShapeError(format!("{}: {e}", path.display())))
}

fn read_list(dir: &Path, file: &str) -> Result<Vec<Value>, ShapeError> {
    match read_json(dir, file)? {
        Value::Array(a) => Ok(a),
        _ => Err(ShapeError(format!(
            "{}/{file}: not a JSON list",
            dir.display()
        ))),
    }
}

impl Golden {
    /// Loads `tests/golden/istiod/<case>/`.
    pub fn load(case: &str) -> Result<Golden, ShapeError> {
        let dir = golden_root().join(case);
        Ok(Golden {
            case: case.to_string(),
            listeners: read_list(&dir, "listeners.json")?,
            clusters: read_list(&dir, "clusters.json")?,
            endpoints: read_list(&dir, "endpoints.json")?,
            ecds: read_list(&dir, "ecds.json")?,
            meta: read_json(&dir, "meta.json")?,
        })
    }

    pub fn listener(&self, name: &str) -> Result<&Value, ShapeError> {
        find(&self.listeners, "name", name)
            .ok_or_else(|| ShapeError(format!("golden {}: no listener {name}", self.case)))
    }

    pub fn cluster(&self, name: &str) -> Result<&Value, ShapeError> {
        find(&self.clusters, "name", name)
            .ok_or_else(|| ShapeError(format!("golden {}: no cluster {name}", self.case)))
    }

    /// The ECDS resource named `name` (what pilot-agent hands Envoy for a
    /// `config_discovery` HTTP filter).
    pub fn extension_config(&self, name: &str) -> Result<&Value, ShapeError> {
        find(&self.ecds, "name", name)
            .ok_or_else(|| ShapeError(format!("golden {}: no ECDS resource {name}", self.case)))
    }

    /// The name a cluster's stats carry (`alt_stat_name`, else its name).
    pub fn stat_name(&self, cluster: &str) -> String {
        self.cluster(cluster)
            .ok()
            .and_then(|c| c.get("alt_stat_name"))
            .and_then(Value::as_str)
            .unwrap_or(cluster)
            .to_string()
    }

    /// The Istio version the files were generated with.
    pub fn istio_version(&self) -> &str {
        self.meta
            .pointer("/istio/version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
    }
}

fn find<'a>(list: &'a [Value], key: &str, value: &str) -> Option<&'a Value> {
    list.iter()
        .find(|v| v.get(key).and_then(Value::as_str) == Some(value))
}

/// The golden case whose waypoint configuration stands for a scenario's
/// plugin configuration: the DestinationRule case when it has a
/// `trafficPolicy`, the PreferClose case for a `trafficDistribution` alone,
/// else the case without either. Only the `inbound-vip` cluster's
/// DestinationRule fields differ between them, and those are rendered from
/// the scenario itself (see `render`). Scenarios with pods behind
/// east-west gateways use the `multi-network` case instead (`super::play`).
pub fn case_for(config: &Value) -> &'static str {
    if config.get("trafficPolicy").is_some_and(|v| !v.is_null()) {
        "step6"
    } else if config
        .get("trafficDistribution")
        .is_some_and(|v| !v.is_null())
    {
        "prefer-close"
    } else {
        "no-dr"
    }
}
