//! Plugin configuration: what users write (Istio's language) and the
//! validated [`Settings`] the engine runs on.
//!
//! The JSON is what an Istio `WasmPlugin.spec.pluginConfig` delivers: a
//! DestinationRule `trafficPolicy` verbatim, the Service's
//! `trafficDistribution`, where the endpoint inventory comes from, how the
//! choice is handed to Envoy, and optionally the proxy's own locality.
//! Validation happens once, at configure time; every error names the field
//! and the value that was refused.

mod declared;
pub mod duration;
pub mod envoy_source;
pub mod istio;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::inventory::{EndpointSpec, Labels};
pub use declared::AttemptCount;
use duration::{parse_duration, DurationError};
pub use envoy_source::EnvoySource;
pub use istio::TrafficPolicy;

/// Largest plugin configuration accepted, in bytes. Istio inlines
/// `pluginConfig` into xDS; anything bigger is almost surely a mistake.
pub const MAX_CONFIG_BYTES: usize = 8 * 1024 * 1024;

pub const LABEL_NETWORK: &str = "topology.istio.io/network";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_SUBZONE: &str = "topology.istio.io/subzone";
pub const LABEL_CLUSTER: &str = "topology.istio.io/cluster";
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// Default `filter_metadata` namespace holding the inventory in the cluster's metadata.
pub const DEFAULT_METADATA_NAMESPACE: &str = "locality-failover";
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-locality-failover-hosts";
pub const DEFAULT_ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";
pub const DEFAULT_ROUTE_HEADER: &str = "x-locality-failover-backend";
pub const DEFAULT_SESSION_HEADER: &str = "x-locality-failover-session";
pub const DEFAULT_SHARED_PREFIX: &str = "locality-failover";

/// A configuration the filter refuses, naming the field and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("plugin configuration is {0} bytes, more than the {MAX_CONFIG_BYTES} accepted")]
    TooLarge(usize),
    #[error("plugin configuration is not valid JSON: {0}")]
    Json(String),
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("field `{field}` = {value:?}: {source}")]
    Duration {
        field: &'static str,
        value: String,
        source: DurationError,
    },
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// The raw plugin configuration, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// `PreferNetwork` (default), `PreferClose`, `PreferSameZone`,
    /// `PreferSameNode`, or `Any` (no traffic distribution: Istio's mesh default).
    #[serde(default)]
    pub traffic_distribution: Option<String>,
    #[serde(default)]
    pub inventory: Option<InventoryConfig>,
    #[serde(default)]
    pub steering: Option<SteeringConfig>,
    #[serde(default)]
    pub locality: Option<LocalityConfig>,
    /// Prefix of every shared-data key, so several plugins (or several
    /// upstream services) in one Envoy keep separate ejection views.
    #[serde(default)]
    pub shared_data_prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryConfig {
    /// `clusterMetadata` (default without `endpoints`), `config` or `envoy`.
    #[serde(default)]
    pub source: Option<String>,
    /// `envoy` source: the bootstrap cluster reaching the admin.
    #[serde(default)]
    pub admin_cluster: Option<String>,
    #[serde(default)]
    pub poll_interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// `envoy` source: clusters to read (default: those requests go to).
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// `filter_metadata` namespace in the cluster's metadata.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub endpoints: Option<Vec<EndpointSpec>>,
    /// `clusterMetadata` and `envoy` sources: the one cluster every route
    /// through this filter goes to, so a request is not asked its cluster.
    #[serde(default)]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SteeringConfig {
    /// `override-host` (default), `original-dst`, `route-header`,
    /// `stateful-session`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    /// Written before each `ip:port`; `envoy://connect_originate/` on a waypoint.
    #[serde(default)]
    pub address_prefix: Option<String>,
    /// Entries in the override-host list: the pick, then where retries go.
    #[serde(default)]
    pub max_hosts: Option<usize>,
    /// `property` (default) or `responseHeader`: where the attempt count
    /// of a request comes from (see [`AttemptCount`]).
    #[serde(default)]
    pub attempt_count: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityConfig {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub subzone: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub policy: Policy,
    pub inventory: InventorySource,
    pub steering: Steering,
    /// Labels that override the proxy's own (node) labels.
    pub locality_override: Labels,
    pub shared_prefix: String,
    /// `inventory.cluster`: the one cluster every request goes to (checked
    /// by sampling, see `filter::routed`).
    pub declared_cluster: Option<String>,
}

/// How endpoints are ranked, balanced and ejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub ranking: RankingRule,
    pub lb: LbPolicy,
    pub outlier: Option<OutlierConfig>,
    /// Envoy `healthy_panic_threshold` as Istio sets it (percent, 0 = never panic).
    pub panic_threshold: u32,
    /// Where the ranking rule came from, for logs and the lint.
    pub source: RankingSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankingSource {
    DestinationRule,
    TrafficDistribution(TrafficDistribution),
    MeshDefault,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficDistribution {
    PreferNetwork,
    PreferClose,
    PreferSameNode,
}

/// One entry of `failoverPriority`: a label, optionally with the value to
/// compare against instead of the proxy's own (`label=value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityLabel {
    pub name: String,
    pub value: Option<String>,
}

impl PriorityLabel {
    /// Istio splits on every `=`; only exactly two parts carry an override.
    pub fn parse(entry: &str) -> Self {
        let mut parts = entry.split('=');
        let name = parts.next().unwrap_or_default().to_string();
        let rest: Vec<&str> = parts.collect();
        let value = match rest.as_slice() {
            [v] => Some((*v).to_string()),
            _ => None,
        };
        PriorityLabel { name, value }
    }
}

/// The ranking rule istiod would apply for this proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum RankingRule {
    /// Every endpoint at priority 0 (locality LB off, or failover not enabled).
    Flat,
    /// `failoverPriority`, then the region tiers of `failover` when given.
    FailoverPriority {
        labels: Vec<PriorityLabel>,
        failover: Vec<RegionFailover>,
    },
    /// Istio's default region / zone / subzone tiers, with `failover` pairs.
    LocalityTiers { failover: Vec<RegionFailover> },
    /// `distribute`: locality weights, no failover.
    Distribute(Vec<DistributeRule>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionFailover {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributeRule {
    pub from: String,
    pub to: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
}

/// Envoy outlier detection as Istio configures it from a DestinationRule.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub enforcing_5xx: bool,
    pub consecutive_gateway: u32,
    pub enforcing_gateway: bool,
    pub split_local_origin: bool,
    pub consecutive_local_origin: u32,
    pub enforcing_local_origin: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InventorySource {
    ClusterMetadata {
        namespace: String,
    },
    Config(Vec<EndpointSpec>),
    /// Read from Envoy's admin on a timer.
    Envoy(EnvoySource),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteeringMode {
    OverrideHost,
    OriginalDst,
    RouteHeader,
    /// `envoy.http.stateful_session.header`: base64 of the host address.
    StatefulSession,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Steering {
    pub mode: SteeringMode,
    pub header: String,
    pub address_prefix: String,
    pub max_hosts: usize,
    pub attempt_count: AttemptCount,
}

impl Settings {
    /// Parses and validates plugin configuration bytes. Empty means defaults.
    pub fn from_bytes(bytes: &[u8]) -> Result<Settings, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Settings::from_config(&PluginConfig::default());
        }
        let raw: PluginConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        Settings::from_config(&raw)
    }

    pub fn from_config(raw: &PluginConfig) -> Result<Settings, ConfigError> {
        let settings = Settings {
            policy: Policy::from_config(raw)?,
            inventory: inventory_source(raw.inventory.as_ref())?,
            steering: steering(raw.steering.as_ref())?,
            locality_override: locality_override(raw.locality.as_ref()),
            shared_prefix: shared_prefix(raw.shared_data_prefix.as_deref())?,
            declared_cluster: raw.inventory.as_ref().and_then(|i| i.cluster.clone()),
        };
        if settings.steering.mode == SteeringMode::RouteHeader {
            route_header_inventory(&settings.inventory)?;
        }
        Ok(settings)
    }
}

impl Policy {
    /// Resolves the effective locality setting as istiod's
    /// `GetLocalityLbSetting` + `ApplyLocalityLoadBalancer` do: the
    /// DestinationRule's `localityLbSetting` first, then the Service's
    /// traffic distribution, then the mesh default (`enabled: true`).
    /// Failover (priorities) only applies with `outlierDetection`, except for
    /// traffic distribution, which forces it.
    pub fn from_config(raw: &PluginConfig) -> Result<Policy, ConfigError> {
        let tp = raw.traffic_policy.clone().unwrap_or_default();
        let outlier = tp
            .outlier_detection
            .as_ref()
            .map(OutlierConfig::from_istio)
            .transpose()?;
        let lb = lb_policy(tp.load_balancer.as_ref())?;
        let distribution = traffic_distribution(raw.traffic_distribution.as_deref())?;
        let locality_lb = tp
            .load_balancer
            .as_ref()
            .and_then(|l| l.locality_lb_setting.clone());
        let has_outlier = outlier.is_some();

        let (ranking, source) = match (locality_lb, distribution) {
            (Some(setting), _) => {
                if setting.enabled == Some(false) {
                    (RankingRule::Flat, RankingSource::Disabled)
                } else {
                    (
                        rule_from_setting(&setting, has_outlier)?,
                        RankingSource::DestinationRule,
                    )
                }
            }
            (None, Some(Some(td))) => (td.rule(), RankingSource::TrafficDistribution(td)),
            // Istio's mesh default (`enabled: true`): region/zone/subzone
            // tiers, applied only with outlier detection.
            (None, Some(None)) | (None, None) if has_outlier => (
                RankingRule::LocalityTiers { failover: vec![] },
                RankingSource::MeshDefault,
            ),
            (None, Some(None)) => (RankingRule::Flat, RankingSource::MeshDefault),
            // No DestinationRule locality setting, no outlier detection and
            // no distribution at all: the guide's default, PreferNetwork.
            (None, None) => {
                let td = TrafficDistribution::PreferNetwork;
                (td.rule(), RankingSource::TrafficDistribution(td))
            }
        };
        // Istio: minHealthPercent becomes the panic threshold (0 when unset);
        // services with a traffic distribution force it to 0.
        let forced_by_distribution = matches!(distribution, Some(Some(_)))
            || matches!(source, RankingSource::TrafficDistribution(_));
        let panic_threshold = match &tp.outlier_detection {
            _ if forced_by_distribution => 0,
            Some(od) => clamp_percent(od.min_health_percent.unwrap_or(0)),
            None => 0,
        };
        Ok(Policy {
            ranking,
            lb,
            outlier,
            panic_threshold,
            source,
        })
    }
}

impl TrafficDistribution {
    /// The failoverPriority istiod derives for each distribution (Istio 1.27+:
    /// subzone is not part of PreferClose).
    pub fn rule(self) -> RankingRule {
        let names: &[&str] = match self {
            TrafficDistribution::PreferNetwork => &[LABEL_NETWORK],
            TrafficDistribution::PreferClose => &[LABEL_NETWORK, LABEL_REGION, LABEL_ZONE],
            TrafficDistribution::PreferSameNode => &[
                LABEL_NETWORK,
                LABEL_REGION,
                LABEL_ZONE,
                LABEL_SUBZONE,
                LABEL_HOSTNAME,
            ],
        };
        RankingRule::FailoverPriority {
            labels: names.iter().map(|n| PriorityLabel::parse(n)).collect(),
            failover: vec![],
        }
    }
}

/// `None`: not given; `Some(None)`: `Any` (no distribution: Istio's mesh
/// default decides); `Some(Some(td))`: an explicit distribution.
fn traffic_distribution(
    value: Option<&str>,
) -> Result<Option<Option<TrafficDistribution>>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.to_ascii_lowercase().as_str() {
        "prefernetwork" => Ok(Some(Some(TrafficDistribution::PreferNetwork))),
        "preferclose" | "prefersamezone" => Ok(Some(Some(TrafficDistribution::PreferClose))),
        "prefersamenode" => Ok(Some(Some(TrafficDistribution::PreferSameNode))),
        "any" | "" => Ok(Some(None)),
        _ => Err(field_error(
            "trafficDistribution",
            format!("{v:?} is not one of PreferNetwork, PreferClose, PreferSameZone, PreferSameNode, Any"),
        )),
    }
}

fn rule_from_setting(
    setting: &istio::LocalityLbSetting,
    has_outlier: bool,
) -> Result<RankingRule, ConfigError> {
    const FIELD: &str = "trafficPolicy.loadBalancer.localityLbSetting";
    if !setting.distribute.is_empty() && !setting.failover.is_empty() {
        return Err(field_error(
            FIELD,
            "`distribute` and `failover` cannot both be set (Istio rejects it)",
        ));
    }
    let failover = region_failover(&setting.failover)?;
    for (i, entry) in setting.failover_priority.iter().enumerate() {
        let label = PriorityLabel::parse(entry);
        if label.name.is_empty() {
            return Err(field_error(
                format!("{FIELD}.failoverPriority[{i}]"),
                format!("{entry:?} names no label"),
            ));
        }
        if !failover.is_empty()
            && [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE].contains(&label.name.as_str())
        {
            return Err(field_error(
                format!("{FIELD}.failoverPriority[{i}]"),
                format!("{entry:?}: a topology label cannot be combined with `failover` (Istio rejects it)"),
            ));
        }
    }
    if !setting.distribute.is_empty() {
        return Ok(RankingRule::Distribute(distribute_rules(
            &setting.distribute,
        )?));
    }
    // "Failover needs outlier detection, otherwise Envoy will never drop
    // down to a lower priority" (istiod): without it, one flat priority.
    if !has_outlier {
        return Ok(RankingRule::Flat);
    }
    if setting.failover_priority.is_empty() {
        return Ok(RankingRule::LocalityTiers { failover });
    }
    Ok(RankingRule::FailoverPriority {
        labels: setting
            .failover_priority
            .iter()
            .map(|e| PriorityLabel::parse(e))
            .collect(),
        failover,
    })
}

fn region_failover(entries: &[istio::Failover]) -> Result<Vec<RegionFailover>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = format!("trafficPolicy.loadBalancer.localityLbSetting.failover[{i}]");
            for (name, v) in [("from", &f.from), ("to", &f.to)] {
                if v.is_empty() || v.contains('/') || v.contains('*') {
                    return Err(field_error(
                        format!("{field}.{name}"),
                        format!("{v:?} must be a plain region (no '/', no '*')"),
                    ));
                }
            }
            if f.from == f.to {
                return Err(field_error(
                    field,
                    format!("`from` and `to` are both {:?}", f.from),
                ));
            }
            Ok(RegionFailover {
                from: f.from.clone(),
                to: f.to.clone(),
            })
        })
        .collect()
}

fn distribute_rules(entries: &[istio::Distribute]) -> Result<Vec<DistributeRule>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
            if total != 100 {
                return Err(field_error(
                    format!("trafficPolicy.loadBalancer.localityLbSetting.distribute[{i}].to"),
                    format!("weights add up to {total}, Istio requires 100"),
                ));
            }
            Ok(DistributeRule {
                from: d.from.clone(),
                to: d.to.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            })
        })
        .collect()
}

fn lb_policy(lb: Option<&istio::LoadBalancerSettings>) -> Result<LbPolicy, ConfigError> {
    let simple = lb
        .and_then(|l| l.simple.as_deref())
        .unwrap_or("UNSPECIFIED");
    match simple {
        // Istio's default for unspecified is LEAST_REQUEST (since 1.14).
        "UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" => Ok(LbPolicy::LeastRequest),
        "ROUND_ROBIN" => Ok(LbPolicy::RoundRobin),
        "RANDOM" => Ok(LbPolicy::Random),
        other => Err(field_error(
            "trafficPolicy.loadBalancer.simple",
            format!("{other:?} is not supported (use ROUND_ROBIN, LEAST_REQUEST or RANDOM)"),
        )),
    }
}

fn clamp_percent(v: i32) -> u32 {
    u32::try_from(v.clamp(0, 100)).unwrap_or(0)
}

fn duration_field(
    field: &'static str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => {
            let d = parse_duration(v).map_err(|source| ConfigError::Duration {
                field,
                value: v.clone(),
                source,
            })?;
            if d.is_zero() {
                return Err(field_error(
                    field,
                    format!("{v:?} must be greater than zero"),
                ));
            }
            Ok(d)
        }
    }
}

impl OutlierConfig {
    /// Istio's `applyOutlierDetection`, then Envoy's defaults for what it leaves unset.
    pub fn from_istio(od: &istio::OutlierDetection) -> Result<OutlierConfig, ConfigError> {
        let interval = duration_field(
            "trafficPolicy.outlierDetection.interval",
            od.interval.as_ref(),
            Duration::from_secs(10),
        )?;
        let base = duration_field(
            "trafficPolicy.outlierDetection.baseEjectionTime",
            od.base_ejection_time.as_ref(),
            Duration::from_secs(30),
        )?;
        if let Some(p) = od.max_ejection_percent {
            if !(0..=100).contains(&p) {
                return Err(field_error(
                    "trafficPolicy.outlierDetection.maxEjectionPercent",
                    format!("{p} is not in 0..100"),
                ));
            }
        }
        if let Some(p) = od.min_health_percent {
            if !(0..=100).contains(&p) {
                return Err(field_error(
                    "trafficPolicy.outlierDetection.minHealthPercent",
                    format!("{p} is not in 0..100"),
                ));
            }
        }
        let (consecutive_5xx, enforcing_5xx) = match od.consecutive_5xx_errors {
            Some(v) => (v, v > 0),
            None => (5, true),
        };
        let (consecutive_gateway, enforcing_gateway) = match od.consecutive_gateway_errors {
            Some(v) => (v, v > 0),
            None => (5, false),
        };
        let consecutive_local_origin = match od.consecutive_local_origin_failures {
            Some(v) if v > 0 => v,
            _ => 5,
        };
        Ok(OutlierConfig {
            consecutive_5xx,
            enforcing_5xx,
            consecutive_gateway,
            enforcing_gateway,
            split_local_origin: od.split_external_local_origin_errors,
            consecutive_local_origin,
            enforcing_local_origin: true,
            interval,
            base_ejection_time: base,
            max_ejection_time: base.max(Duration::from_secs(300)),
            max_ejection_percent: match od.max_ejection_percent {
                Some(p) if p > 0 => clamp_percent(p),
                _ => 10,
            },
        })
    }
}

fn inventory_source(inv: Option<&InventoryConfig>) -> Result<InventorySource, ConfigError> {
    let default = InventoryConfig::default();
    let inv = inv.unwrap_or(&default);
    let source = inv.source.as_deref().unwrap_or(if inv.endpoints.is_some() {
        "config"
    } else {
        "clusterMetadata"
    });
    if source != "envoy" {
        envoy_source::refuse_envoy_fields(inv, source)?;
    }
    declared::declared_cluster(inv, source)?;
    match source {
        "envoy" => Ok(InventorySource::Envoy(envoy_source::envoy_source(inv)?)),
        "clusterMetadata" => {
            if inv.endpoints.is_some() {
                return Err(field_error(
                    "inventory.endpoints",
                    "given, but inventory.source is clusterMetadata",
                ));
            }
            let namespace = inv
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_METADATA_NAMESPACE.to_string());
            if namespace.is_empty() {
                return Err(field_error("inventory.namespace", "must not be empty"));
            }
            Ok(InventorySource::ClusterMetadata { namespace })
        }
        "config" => {
            let endpoints = inv.endpoints.clone().unwrap_or_default();
            // Validate now so a bad inline inventory is refused at configure time.
            crate::inventory::Inventory::from_specs(&endpoints)
                .map_err(|e| field_error("inventory.endpoints", e.to_string()))?;
            Ok(InventorySource::Config(endpoints))
        }
        other => Err(field_error(
            "inventory.source",
            format!("{other:?} is not one of clusterMetadata, config, envoy"),
        )),
    }
}

fn steering(cfg: Option<&SteeringConfig>) -> Result<Steering, ConfigError> {
    let default = SteeringConfig::default();
    let cfg = cfg.unwrap_or(&default);
    let mode = match cfg.mode.as_deref().unwrap_or("override-host") {
        "override-host" => SteeringMode::OverrideHost,
        "original-dst" => SteeringMode::OriginalDst,
        "route-header" => SteeringMode::RouteHeader,
        "stateful-session" => SteeringMode::StatefulSession,
        other => {
            return Err(field_error(
                "steering.mode",
                format!("{other:?} is not one of override-host, original-dst, route-header, stateful-session"),
            ))
        }
    };
    let header = match &cfg.header {
        Some(h) => h.to_ascii_lowercase(),
        None => match mode {
            SteeringMode::OverrideHost => DEFAULT_OVERRIDE_HEADER,
            SteeringMode::OriginalDst => DEFAULT_ORIGINAL_DST_HEADER,
            SteeringMode::RouteHeader => DEFAULT_ROUTE_HEADER,
            SteeringMode::StatefulSession => DEFAULT_SESSION_HEADER,
        }
        .to_string(),
    };
    let valid_header = !header.is_empty()
        && !header.starts_with(':')
        && header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid_header {
        return Err(field_error(
            "steering.header",
            format!("{header:?} is not a valid request header name"),
        ));
    }
    let max_hosts = cfg.max_hosts.unwrap_or(3);
    if !(1..=16).contains(&max_hosts) {
        return Err(field_error(
            "steering.maxHosts",
            format!("{max_hosts} is not in 1..16"),
        ));
    }
    Ok(Steering {
        mode,
        header,
        address_prefix: cfg.address_prefix.clone().unwrap_or_default(),
        attempt_count: declared::attempt_count(cfg.attempt_count.as_deref())?,
        max_hosts: if mode == SteeringMode::OverrideHost {
            max_hosts
        } else {
            1
        },
    })
}

/// Route-header steering chooses the route, so the routed cluster (and its
/// metadata) cannot tell the filter the inventory: it must come from the
/// plugin configuration, each endpoint naming its backend.
fn route_header_inventory(inventory: &InventorySource) -> Result<(), ConfigError> {
    let InventorySource::Config(endpoints) = inventory else {
        return Err(field_error(
            "inventory.source",
            "route-header steering needs the inventory in the plugin configuration (inventory.endpoints, each with a `backend`): the route, and so the cluster metadata, depends on the header the filter writes",
        ));
    };
    match endpoints
        .iter()
        .position(|e| e.backend.as_deref().is_none_or(str::is_empty))
    {
        Some(i) => Err(field_error(
            format!("inventory.endpoints[{i}].backend"),
            "missing: route-header steering writes the backend name of the chosen endpoint",
        )),
        None => Ok(()),
    }
}

fn locality_override(cfg: Option<&LocalityConfig>) -> Labels {
    let mut labels = Labels::new();
    let Some(cfg) = cfg else {
        return labels;
    };
    for (k, v) in &cfg.labels {
        labels.insert(k.clone(), v.clone());
    }
    for (name, value) in [
        (LABEL_REGION, &cfg.region),
        (LABEL_ZONE, &cfg.zone),
        (LABEL_SUBZONE, &cfg.subzone),
        (LABEL_NETWORK, &cfg.network),
    ] {
        if let Some(v) = value {
            labels.insert(name.to_string(), v.clone());
        }
    }
    labels
}

fn shared_prefix(prefix: Option<&str>) -> Result<String, ConfigError> {
    let p = prefix.unwrap_or(DEFAULT_SHARED_PREFIX);
    if p.is_empty() || p.len() > 128 {
        return Err(field_error(
            "sharedDataPrefix",
            format!("{p:?} must be 1 to 128 characters"),
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod declared_tests;
#[cfg(test)]
mod tests;
