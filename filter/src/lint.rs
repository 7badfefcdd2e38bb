//! What users get wrong in a failover configuration: valid, but not doing
//! what they meant. Warnings are logged at configure time and printed by
//! `host-harness lint CONFIG`.

use crate::config::{
    istio, PluginConfig, RankingRule, RankingSource, Settings, LABEL_NETWORK, LABEL_REGION,
    LABEL_ZONE,
};

/// One finding: a field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Warnings that follow from validated settings alone.
pub fn warnings_for(settings: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    if let RankingRule::FailoverPriority { labels, .. } = &settings.policy.ranking {
        let pos = |name: &str| labels.iter().position(|l| l.name == name);
        if let (Some(zone), Some(region)) = (pos(LABEL_ZONE), pos(LABEL_REGION)) {
            if zone < region {
                out.push(Finding {
                    field: "trafficPolicy.loadBalancer.localityLbSetting.failoverPriority".into(),
                    message: format!(
                        "{LABEL_ZONE} comes before {LABEL_REGION}: Istio stops at the first label that differs, so another zone of the same region ranks with the other regions (not zone, then region, then the rest). For that order write [{LABEL_NETWORK}, {LABEL_REGION}, {LABEL_ZONE}] or [{LABEL_REGION}, {LABEL_ZONE}]"
                    ),
                });
            }
        }
    }
    if let Some(od) = &settings.policy.outlier {
        if !od.enforcing_5xx && !od.enforcing_gateway && !od.split_local_origin {
            out.push(Finding {
                field: "trafficPolicy.outlierDetection".into(),
                message: "no detector is enforced (consecutive5xxErrors: 0 and no consecutiveGatewayErrors): nothing is ever ejected".into(),
            });
        }
    }
    if let crate::config::InventorySource::Config(specs) = &settings.inventory {
        if let Some(f) = ejection_cap(settings, specs.len()) {
            out.push(f);
        }
    }
    if let crate::config::InventorySource::Envoy(source) = &settings.inventory {
        if source.timeout > source.poll_interval {
            out.push(Finding {
                field: "inventory.timeout".into(),
                message: format!(
                    "{:?} is longer than pollInterval {:?}: a poll is skipped while the previous one waits, so a hanging admin slows updates to one per timeout",
                    source.timeout, source.poll_interval
                ),
            });
        }
    }
    out
}

/// `maxEjectionPercent` too small for the number of endpoints: since Envoy
/// no longer lets a first ejection through, `100 / n > max%` ejects nothing.
pub fn ejection_cap(settings: &Settings, endpoints: usize) -> Option<Finding> {
    let od = settings.policy.outlier.as_ref()?;
    if endpoints == 0 {
        return None;
    }
    let first = 100.0 / endpoints as f64;
    (first > f64::from(od.max_ejection_percent)).then(|| Finding {
        field: "trafficPolicy.outlierDetection.maxEjectionPercent".into(),
        message: format!(
            "{}% with {endpoints} endpoints: one ejection would be {first:.1}%, so Envoy never ejects any; raise it to at least {}",
            od.max_ejection_percent,
            first.ceil()
        ),
    })
}

/// Everything the lint can say about a raw configuration: unknown fields,
/// failover without outlier detection, then [`warnings_for`].
pub fn lint_json(value: &serde_json::Value) -> Result<Vec<Finding>, crate::config::ConfigError> {
    let mut out = Vec::new();
    unknown_fields(value, &mut out);
    let raw: PluginConfig = serde_json::from_value(value.clone())
        .map_err(|e| crate::config::ConfigError::Json(e.to_string()))?;
    let settings = Settings::from_config(&raw)?;
    if let Some(setting) = raw
        .traffic_policy
        .as_ref()
        .and_then(|t| t.load_balancer.as_ref())
        .and_then(|l| l.locality_lb_setting.as_ref())
    {
        let asks_failover = !setting.failover.is_empty() || !setting.failover_priority.is_empty();
        let has_outlier = raw
            .traffic_policy
            .as_ref()
            .is_some_and(|t| t.outlier_detection.is_some());
        if asks_failover && !has_outlier && settings.policy.source == RankingSource::DestinationRule
        {
            out.push(Finding {
                field: "trafficPolicy.outlierDetection".into(),
                message: "missing: Istio applies failover/failoverPriority only with outlierDetection, so every endpoint stays at one priority".into(),
            });
        }
    }
    out.extend(warnings_for(&settings));
    Ok(out)
}

const TOP_LEVEL: &[&str] = &[
    "trafficPolicy",
    "trafficDistribution",
    "inventory",
    "steering",
    "locality",
    "sharedDataPrefix",
];
const INVENTORY: &[&str] = &[
    "source",
    "namespace",
    "endpoints",
    "adminCluster",
    "pollInterval",
    "timeout",
    "maxResponseBytes",
    "clusters",
    "cluster",
];
const STEERING: &[&str] = &[
    "mode",
    "header",
    "addressPrefix",
    "maxHosts",
    "attemptCount",
];
const LOCALITY: &[&str] = &["region", "zone", "subzone", "network", "labels"];

fn unknown_fields(value: &serde_json::Value, out: &mut Vec<Finding>) {
    check_object(value, "", TOP_LEVEL, out);
    for (name, known) in [
        ("inventory", INVENTORY),
        ("steering", STEERING),
        ("locality", LOCALITY),
    ] {
        if let Some(v) = value.get(name) {
            check_object(v, name, known, out);
        }
    }
    let tp = value.get("trafficPolicy");
    if let Some(tp) = tp {
        check_object(tp, "trafficPolicy", istio::KNOWN_TRAFFIC_POLICY_FIELDS, out);
        if let Some(lb) = tp.get("loadBalancer") {
            check_object(
                lb,
                "trafficPolicy.loadBalancer",
                istio::KNOWN_LOAD_BALANCER_FIELDS,
                out,
            );
            if let Some(l) = lb.get("localityLbSetting") {
                check_object(
                    l,
                    "trafficPolicy.loadBalancer.localityLbSetting",
                    istio::KNOWN_LOCALITY_LB_FIELDS,
                    out,
                );
            }
        }
        if let Some(od) = tp.get("outlierDetection") {
            check_object(
                od,
                "trafficPolicy.outlierDetection",
                istio::KNOWN_OUTLIER_FIELDS,
                out,
            );
            if od.get("consecutiveErrors").is_some() {
                out.push(Finding {
                    field: "trafficPolicy.outlierDetection.consecutiveErrors".into(),
                    message: "deprecated and ignored by Istio; use consecutive5xxErrors".into(),
                });
            }
        }
    }
}

fn check_object(value: &serde_json::Value, path: &str, known: &[&str], out: &mut Vec<Finding>) {
    let Some(map) = value.as_object() else { return };
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            out.push(Finding {
                field,
                message: "unknown field: ignored (check its spelling)".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn warns_about_the_guides_zone_region_order() {
        let cfg = json!({"trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {"failoverPriority": [LABEL_ZONE, LABEL_REGION]}},
            "outlierDetection": {"consecutive5xxErrors": 5, "maxEjectionPercent": 50}}});
        let f = lint_json(&cfg).unwrap();
        assert!(
            f.iter().any(|f| f.message.contains("comes before")),
            "{f:?}"
        );
        let good = json!({"trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {"failoverPriority": [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]}},
            "outlierDetection": {"maxEjectionPercent": 50}}});
        assert!(lint_json(&good).unwrap().is_empty());
    }

    #[test]
    fn warns_about_failover_without_outlier_detection() {
        let cfg = json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "failover": [{"from": "us-east-1", "to": "us-west-2"}]}}}});
        let f = lint_json(&cfg).unwrap();
        assert!(
            f.iter()
                .any(|f| f.field == "trafficPolicy.outlierDetection"),
            "{f:?}"
        );
    }

    #[test]
    fn warns_about_unknown_fields_and_small_caps() {
        let cfg = json!({
            "trafficPolicy": {"outlierDetection": {"consecutive5xxError": 5}},
            "inventory": {"endpoints": [{"address": "10.0.0.1:80"}, {"address": "10.0.0.2:80"}]},
            "steerng": {}
        });
        let f = lint_json(&cfg).unwrap();
        assert!(f.iter().any(|f| f.field == "steerng"), "{f:?}");
        assert!(
            f.iter()
                .any(|f| f.field == "trafficPolicy.outlierDetection.consecutive5xxError"),
            "{f:?}"
        );
        assert!(
            !f.iter().any(|f| f.field.starts_with("inventory.")),
            "{f:?}"
        );
        // Default maxEjectionPercent 10 with 2 endpoints: never ejects.
        assert!(
            f.iter().any(|f| f.field.ends_with("maxEjectionPercent")),
            "{f:?}"
        );
    }

    #[test]
    fn knows_the_envoy_source_and_session_fields() {
        let cfg = json!({
            "inventory": {"source": "envoy", "adminCluster": "prometheus_stats", "pollInterval": "1s",
                          "timeout": "500ms", "maxResponseBytes": 1048576, "clusters": ["c"]},
            "steering": {"mode": "stateful-session", "header": "x-locality-failover-session"}
        });
        assert_eq!(lint_json(&cfg).unwrap(), vec![]);
        let typo = json!({"inventory": {"source": "envoy", "pollIntreval": "1s"},
                          "steering": {"mode": "stateful-session", "headr": "x"}});
        let f = lint_json(&typo).unwrap();
        assert!(
            f.iter().any(|f| f.field == "inventory.pollIntreval"),
            "{f:?}"
        );
        assert!(f.iter().any(|f| f.field == "steering.headr"), "{f:?}");
        let slow = json!({"inventory": {"source": "envoy", "pollInterval": "1s", "timeout": "5s"}});
        let f = lint_json(&slow).unwrap();
        assert!(f.iter().any(|f| f.field == "inventory.timeout"), "{f:?}");
    }
}
