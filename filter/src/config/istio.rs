//! The JSON form of an Istio DestinationRule `spec.trafficPolicy`, as users
//! paste it. Only the fields that steer failover are typed; the others
//! (`connectionPool`, `tls`, `portLevelSettings`...) are accepted and ignored,
//! so a whole trafficPolicy copied from a DestinationRule loads. The lint
//! (`crate::lint`) reports fields that Istio itself would not know.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `networking.istio.io/v1 DestinationRule.spec.trafficPolicy`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// `ROUND_ROBIN`, `LEAST_REQUEST`, `RANDOM`, `PASSTHROUGH`, `UNSPECIFIED`
    /// (`LEAST_CONN` is Istio's deprecated alias of `LEAST_REQUEST`).
    #[serde(default)]
    pub simple: Option<String>,
    #[serde(default)]
    pub consistent_hash: Option<serde_json::Value>,
    #[serde(default)]
    pub locality_lb_setting: Option<LocalityLbSetting>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub distribute: Vec<Distribute>,
    #[serde(default)]
    pub failover: Vec<Failover>,
    #[serde(default)]
    pub failover_priority: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Distribute {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Failover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// `OutlierDetection`; numbers are `UInt32Value`/`int32` in the API and
/// plain JSON numbers here. Durations are strings (`"10s"`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: Option<i32>,
    #[serde(default)]
    pub min_health_percent: Option<i32>,
    /// Deprecated in Istio and ignored by istiod since 2020; accepted so old
    /// rules still load (the lint says it does nothing).
    #[serde(default)]
    pub consecutive_errors: Option<i32>,
}

/// Field names Istio knows at each level of a trafficPolicy, for the lint.
pub const KNOWN_TRAFFIC_POLICY_FIELDS: &[&str] = &[
    "loadBalancer",
    "connectionPool",
    "outlierDetection",
    "tls",
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
    "retryBudget",
];
pub const KNOWN_LOAD_BALANCER_FIELDS: &[&str] = &[
    "simple",
    "consistentHash",
    "localityLbSetting",
    "warmupDurationSecs",
    "warmup",
];
pub const KNOWN_LOCALITY_LB_FIELDS: &[&str] =
    &["enabled", "distribute", "failover", "failoverPriority"];
pub const KNOWN_OUTLIER_FIELDS: &[&str] = &[
    "consecutive5xxErrors",
    "consecutiveGatewayErrors",
    "consecutiveLocalOriginFailures",
    "splitExternalLocalOriginErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
    "consecutiveErrors",
];
