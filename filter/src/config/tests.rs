use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

fn settings(v: &Value) -> Result<Settings, ConfigError> {
    Settings::from_bytes(v.to_string().as_bytes())
}

fn policy(v: &Value) -> Policy {
    settings(v).unwrap().policy
}

fn error(v: &Value) -> String {
    match settings(v) {
        Ok(s) => panic!("expected an error for {v}, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn fp(entries: &[&str]) -> RankingRule {
    RankingRule::FailoverPriority {
        labels: entries.iter().map(|e| PriorityLabel::parse(e)).collect(),
        failover: vec![],
    }
}

fn outlier(v: &Value) -> OutlierConfig {
    policy(&json!({"trafficPolicy": {"outlierDetection": v}}))
        .outlier
        .unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ------------------------------------------------------------ precedence

#[test]
fn destination_rule_locality_setting_beats_traffic_distribution() {
    // istio loadbalancer.go GetLocalityLbSetting: `if destrule != nil { return destrule }`
    // before the Service's traffic distribution.
    let p = policy(&json!({
        "trafficDistribution": "PreferClose",
        "trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {"failoverPriority": [LABEL_ZONE]}},
            "outlierDetection": {}
        }
    }));
    assert_eq!(p.source, RankingSource::DestinationRule);
    assert_eq!(p.ranking, fp(&[LABEL_ZONE]));
}

#[test]
fn traffic_distribution_beats_the_mesh_default() {
    // istio loadbalancer.go GetLocalityLbSetting: the Service traffic distribution is
    // used when the DR has no localityLbSetting, even if it has outlierDetection.
    let p = policy(&json!({
        "trafficDistribution": "PreferClose",
        "trafficPolicy": {"outlierDetection": {}}
    }));
    assert_eq!(
        p.source,
        RankingSource::TrafficDistribution(TrafficDistribution::PreferClose)
    );
    assert_eq!(p.ranking, fp(&[LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]));
}

#[test]
fn mesh_default_with_outlier_detection_gives_locality_tiers() {
    // istio mesh.go default localityLbSetting {enabled: true} + loadbalancer.go
    // ApplyLocalityLoadBalancer: outlierDetection alone turns on region/zone/subzone failover.
    let p = policy(&json!({"trafficPolicy": {"outlierDetection": {}}}));
    assert_eq!(p.source, RankingSource::MeshDefault);
    assert_eq!(p.ranking, RankingRule::LocalityTiers { failover: vec![] });
}

#[test]
fn nothing_configured_defaults_to_prefer_network() {
    // spec failover-semantics.md §2: PreferNetwork is the guide's default.
    let p = policy(&json!({}));
    assert_eq!(
        p.source,
        RankingSource::TrafficDistribution(TrafficDistribution::PreferNetwork)
    );
    assert_eq!(p.ranking, fp(&[LABEL_NETWORK]));
    assert_eq!(p.outlier, None);
    assert_eq!(p.panic_threshold, 0);
    // Empty bytes mean the same defaults.
    assert_eq!(Settings::from_bytes(b"  \n").unwrap().policy, p);
}

#[test]
fn explicit_any_means_the_mesh_default_not_prefer_network() {
    // istio loadbalancer.go GetLocalityLbSetting: TrafficDistributionAny falls through to
    // the mesh setting; ApplyLocalityLoadBalancer: without outlierDetection
    // (enableFailover false) no priorities are assigned. config/mod.rs PluginConfig
    // doc: "`Any` (no traffic distribution: Istio's mesh default)".
    let p = policy(&json!({"trafficDistribution": "Any"}));
    assert_eq!(p.ranking, RankingRule::Flat);
    assert_ne!(
        p.source,
        RankingSource::TrafficDistribution(TrafficDistribution::PreferNetwork)
    );
}

#[test]
fn explicit_any_with_outlier_detection_is_the_mesh_default() {
    // istio loadbalancer.go GetLocalityLbSetting: Any -> mesh setting (enabled: true).
    let p =
        policy(&json!({"trafficDistribution": "Any", "trafficPolicy": {"outlierDetection": {}}}));
    assert_eq!(p.source, RankingSource::MeshDefault);
    assert_eq!(p.ranking, RankingRule::LocalityTiers { failover: vec![] });
}

#[test]
fn enabled_false_is_flat_even_with_distribution_and_outlier_detection() {
    // istio loadbalancer.go GetLocalityLbSetting: DR `enabled: false` returns nil
    // (locality LB off) before the traffic distribution is looked at.
    let p = policy(&json!({
        "trafficDistribution": "PreferClose",
        "trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {
                "enabled": false,
                "failoverPriority": [LABEL_ZONE]
            }},
            "outlierDetection": {}
        }
    }));
    assert_eq!(p.ranking, RankingRule::Flat);
    assert_eq!(p.source, RankingSource::Disabled);
}

#[test]
fn failover_priority_without_outlier_detection_is_flat() {
    // istio endpoint_builder.go: enableFailover = outlierDetection != nil || Force;
    // loadbalancer.go: "Failover needs outlier detection, otherwise Envoy will never drop
    // down to a lower priority".
    let p = policy(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "failoverPriority": [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]
        }}}}),
    );
    assert_eq!(p.ranking, RankingRule::Flat);
    assert_eq!(p.source, RankingSource::DestinationRule);
}

#[test]
fn failover_without_outlier_detection_is_flat() {
    // istio endpoint_builder.go enableFailover gate (validation only warns).
    let p = policy(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "failover": [{"from": "us-east-1", "to": "us-west-2"}]
        }}}}),
    );
    assert_eq!(p.ranking, RankingRule::Flat);
}

#[test]
fn locality_setting_with_outlier_detection_applies() {
    // istio loadbalancer.go ApplyLocalityLoadBalancer: enableFailover with failoverPriority.
    let p = policy(&json!({"trafficPolicy": {
        "loadBalancer": {"localityLbSetting": {"failoverPriority": [LABEL_ZONE, LABEL_REGION]}},
        "outlierDetection": {"consecutive5xxErrors": 5}
    }}));
    assert_eq!(p.ranking, fp(&[LABEL_ZONE, LABEL_REGION]));
    // Without failoverPriority: the default tiers with the failover pairs.
    let p = policy(&json!({"trafficPolicy": {
        "loadBalancer": {"localityLbSetting": {"failover": [{"from": "us-east-1", "to": "us-west-2"}]}},
        "outlierDetection": {}
    }}));
    assert_eq!(
        p.ranking,
        RankingRule::LocalityTiers {
            failover: vec![RegionFailover {
                from: "us-east-1".into(),
                to: "us-west-2".into()
            }]
        }
    );
}

#[test]
fn traffic_distribution_forces_failover_without_outlier_detection() {
    // istio loadbalancer.go GetLocalityLbSetting returns Force=true for a traffic
    // distribution; endpoint_builder.go enableFailover = ... || Force.
    let p = policy(&json!({"trafficDistribution": "PreferClose"}));
    assert_eq!(p.outlier, None);
    assert_eq!(p.ranking, fp(&[LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]));
}

#[test]
fn traffic_distribution_names() {
    // istio model/service.go GetTrafficDistribution (case-insensitive annotation);
    // Kubernetes KEP-3015: PreferClose is an alias of PreferSameZone.
    for name in ["PreferClose", "preferclose", "PreferSameZone"] {
        let p = policy(&json!({"trafficDistribution": name}));
        assert_eq!(
            p.source,
            RankingSource::TrafficDistribution(TrafficDistribution::PreferClose),
            "{name}"
        );
    }
    let p = policy(&json!({"trafficDistribution": "PreferSameNode"}));
    assert_eq!(
        p.ranking,
        fp(&[
            LABEL_NETWORK,
            LABEL_REGION,
            LABEL_ZONE,
            LABEL_SUBZONE,
            LABEL_HOSTNAME
        ])
    );
}

#[test]
fn distribute_applies_without_outlier_detection() {
    // istio loadbalancer.go ApplyLocalityLoadBalancer: `distribute` is applied before
    // (and independently of) the enableFailover gate.
    let p = policy(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "distribute": [{"from": "us-east-1/*", "to": {"us-east-1/*": 80, "us-west-2/*": 20}}]
        }}}}),
    );
    assert_eq!(
        p.ranking,
        RankingRule::Distribute(vec![DistributeRule {
            from: "us-east-1/*".into(),
            to: vec![("us-east-1/*".into(), 80), ("us-west-2/*".into(), 20)],
        }])
    );
}

#[test]
fn failover_and_non_topology_failover_priority_combine() {
    // istio validation.go: failover + failoverPriority is rejected only for region/zone/
    // subzone labels; loadbalancer.go applies both (p*5 + tier).
    let p = policy(&json!({"trafficPolicy": {
        "loadBalancer": {"localityLbSetting": {
            "failoverPriority": ["version"],
            "failover": [{"from": "us-east-1", "to": "us-west-2"}]
        }},
        "outlierDetection": {}
    }}));
    assert_eq!(
        p.ranking,
        RankingRule::FailoverPriority {
            labels: vec![PriorityLabel {
                name: "version".into(),
                value: None
            }],
            failover: vec![RegionFailover {
                from: "us-east-1".into(),
                to: "us-west-2".into()
            }],
        }
    );
}

// --------------------------------------------------------- panic threshold

#[test]
fn panic_threshold_is_min_health_percent() {
    // istio cluster_traffic_policy.go applyOutlierDetection:
    // healthy_panic_threshold = minHealthPercent.
    let p = policy(&json!({"trafficPolicy": {"outlierDetection": {"minHealthPercent": 30}}}));
    assert_eq!(p.panic_threshold, 30);
}

#[test]
fn panic_threshold_is_zero_when_min_health_percent_is_unset() {
    // istio reference §3.4: the API default of minHealthPercent is 0, so panic is disabled.
    let p = policy(&json!({"trafficPolicy": {"outlierDetection": {}}}));
    assert_eq!(p.panic_threshold, 0);
}

#[test]
fn panic_threshold_forced_to_zero_with_a_traffic_distribution() {
    // istio cluster_traffic_policy.go applyOutlierDetection: SupportsUnhealthyEndpoints()
    // (true with a traffic distribution) forces the threshold to 0, even when the DR's
    // localityLbSetting wins the ranking.
    let p = policy(&json!({
        "trafficDistribution": "PreferClose",
        "trafficPolicy": {"outlierDetection": {"minHealthPercent": 30}}
    }));
    assert_eq!(p.panic_threshold, 0);
    let p = policy(&json!({
        "trafficDistribution": "PreferClose",
        "trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {"failoverPriority": [LABEL_ZONE]}},
            "outlierDetection": {"minHealthPercent": 30}
        }
    }));
    assert_eq!(p.source, RankingSource::DestinationRule);
    assert_eq!(p.panic_threshold, 0);
}

#[test]
fn min_health_percent_out_of_range_is_refused() {
    // istio validation (percent fields are 0..100); the error names field and value.
    let e = error(&json!({"trafficPolicy": {"outlierDetection": {"minHealthPercent": 101}}}));
    assert!(
        e.contains("trafficPolicy.outlierDetection.minHealthPercent"),
        "{e}"
    );
    assert!(e.contains("101"), "{e}");
}

// --------------------------------------------------------- outlier defaults

#[test]
fn empty_outlier_detection_means_5xx_5_enforced() {
    // istio reference §4.4: consecutive5xxErrors unset -> Envoy default 5, enforced 100:
    // active even with `outlierDetection: {}`.
    let o = outlier(&json!({}));
    assert_eq!(o.consecutive_5xx, 5);
    assert!(o.enforcing_5xx);
}

#[test]
fn gateway_errors_counted_but_not_enforced_unless_set() {
    // istio cluster_traffic_policy.go applyOutlierDetection: consecutive_gateway_failure
    // enforced only when consecutiveGatewayErrors is set (> 0); Envoy default threshold 5,
    // enforcing_consecutive_gateway_failure default 0.
    let o = outlier(&json!({}));
    assert_eq!(o.consecutive_gateway, 5);
    assert!(!o.enforcing_gateway);
    let o = outlier(&json!({"consecutiveGatewayErrors": 3}));
    assert_eq!(o.consecutive_gateway, 3);
    assert!(o.enforcing_gateway);
    let o = outlier(&json!({"consecutiveGatewayErrors": 0}));
    assert!(!o.enforcing_gateway);
}

#[test]
fn consecutive_5xx_errors_zero_is_not_enforced() {
    // istio cluster_traffic_policy.go: enforcing_consecutive_5xx = v > 0 ? 100 : 0.
    let o = outlier(&json!({"consecutive5xxErrors": 0}));
    assert!(!o.enforcing_5xx);
    let o = outlier(&json!({"consecutive5xxErrors": 7}));
    assert_eq!(o.consecutive_5xx, 7);
    assert!(o.enforcing_5xx);
}

#[test]
fn interval_and_base_ejection_time_defaults() {
    // envoy outlier_detection.proto defaults (Istio passes them through only if set):
    // interval 10s, base_ejection_time 30s.
    let o = outlier(&json!({}));
    assert_eq!(o.interval, secs(10));
    assert_eq!(o.base_ejection_time, secs(30));
    let o = outlier(&json!({"interval": "1m30s", "baseEjectionTime": "3m"}));
    assert_eq!(o.interval, secs(90));
    assert_eq!(o.base_ejection_time, secs(180));
}

#[test]
fn max_ejection_percent_is_10_unless_positive() {
    // istio cluster_traffic_policy.go: max_ejection_percent passed through only if > 0;
    // otherwise Envoy's default 10.
    assert_eq!(outlier(&json!({})).max_ejection_percent, 10);
    assert_eq!(
        outlier(&json!({"maxEjectionPercent": 0})).max_ejection_percent,
        10
    );
    assert_eq!(
        outlier(&json!({"maxEjectionPercent": 50})).max_ejection_percent,
        50
    );
    assert_eq!(
        outlier(&json!({"maxEjectionPercent": 100})).max_ejection_percent,
        100
    );
}

#[test]
fn max_ejection_time_is_max_of_300s_and_base() {
    // envoy outlier_detection_impl.cc DetectorConfig: max_ejection_time defaults to
    // max(300s, base_ejection_time); Istio cannot set it.
    assert_eq!(outlier(&json!({})).max_ejection_time, secs(300));
    assert_eq!(
        outlier(&json!({"baseEjectionTime": "3m"})).max_ejection_time,
        secs(300)
    );
    assert_eq!(
        outlier(&json!({"baseEjectionTime": "10m"})).max_ejection_time,
        secs(600)
    );
}

#[test]
fn split_local_origin_mapping() {
    // istio cluster_traffic_policy.go applyOutlierDetection: split mode; the local-origin
    // threshold is set (enforced 100) only when consecutiveLocalOriginFailures > 0,
    // otherwise Envoy's default 5, enforced 100.
    let o = outlier(&json!({}));
    assert!(!o.split_local_origin);
    let o = outlier(&json!({"splitExternalLocalOriginErrors": true}));
    assert!(o.split_local_origin);
    assert_eq!(o.consecutive_local_origin, 5);
    assert!(o.enforcing_local_origin);
    let o = outlier(
        &json!({"splitExternalLocalOriginErrors": true, "consecutiveLocalOriginFailures": 3}),
    );
    assert_eq!(o.consecutive_local_origin, 3);
    assert!(o.enforcing_local_origin);
}

#[test]
fn deprecated_consecutive_errors_is_accepted_and_ignored() {
    // istio commit a291ab6: consecutiveErrors is ignored since 2020.
    let o = outlier(&json!({"consecutiveErrors": 1}));
    assert_eq!(o.consecutive_5xx, 5);
}

// --------------------------------------------------------- load balancer

#[test]
fn lb_simple_defaults_to_least_request() {
    // istio cluster_traffic_policy.go applyLoadBalancer: UNSPECIFIED -> LEAST_REQUEST
    // (default since Istio 1.14); LEAST_CONN is its deprecated alias.
    assert_eq!(policy(&json!({})).lb, LbPolicy::LeastRequest);
    for simple in ["UNSPECIFIED", "LEAST_REQUEST", "LEAST_CONN"] {
        let p = policy(&json!({"trafficPolicy": {"loadBalancer": {"simple": simple}}}));
        assert_eq!(p.lb, LbPolicy::LeastRequest, "{simple}");
    }
    let p = policy(&json!({"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}));
    assert_eq!(p.lb, LbPolicy::RoundRobin);
    let p = policy(&json!({"trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}));
    assert_eq!(p.lb, LbPolicy::Random);
}

#[test]
fn unsupported_lb_simple_names_field_and_value() {
    // config/mod.rs: every error names the field and the value refused.
    let e = error(&json!({"trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}}));
    assert!(e.contains("trafficPolicy.loadBalancer.simple"), "{e}");
    assert!(e.contains("PASSTHROUGH"), "{e}");
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_duration_names_field_and_value() {
    // config/mod.rs ConfigError::Duration: field + value + reason.
    let e = error(&json!({"trafficPolicy": {"outlierDetection": {"interval": "10 parsecs"}}}));
    assert!(e.contains("trafficPolicy.outlierDetection.interval"), "{e}");
    assert!(e.contains("10 parsecs"), "{e}");
    let e = error(&json!({"trafficPolicy": {"outlierDetection": {"baseEjectionTime": "30"}}}));
    assert!(
        e.contains("trafficPolicy.outlierDetection.baseEjectionTime"),
        "{e}"
    );
    assert!(e.contains("\"30\""), "{e}");
    let e = error(&json!({"trafficPolicy": {"outlierDetection": {"interval": "0s"}}}));
    assert!(e.contains("trafficPolicy.outlierDetection.interval"), "{e}");
}

#[test]
fn unknown_traffic_distribution_names_field_and_value() {
    // istio model/service.go knows PreferClose/PreferSameZone/PreferSameNode (+ the
    // guide's PreferNetwork); anything else is refused here, naming it.
    let e = error(&json!({"trafficDistribution": "PreferRegion"}));
    assert!(e.contains("trafficDistribution"), "{e}");
    assert!(e.contains("PreferRegion"), "{e}");
}

#[test]
fn bad_steering_mode_names_field_and_value() {
    // config/mod.rs steering(): override-host, original-dst, route-header.
    let e = error(&json!({"steering": {"mode": "teleport"}}));
    assert!(e.contains("steering.mode"), "{e}");
    assert!(e.contains("teleport"), "{e}");
}

#[test]
fn max_ejection_percent_150_is_refused() {
    // istio validation.go: maxEjectionPercent must be in 0..100.
    let e = error(&json!({"trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 150}}}));
    assert!(
        e.contains("trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{e}"
    );
    assert!(e.contains("150"), "{e}");
}

#[test]
fn distribute_with_failover_is_refused() {
    // istio validation.go validateLocalityLbSetting: distribute and failover together
    // is an error.
    let e = error(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "distribute": [{"from": "us-east-1/*", "to": {"us-east-1/*": 100}}],
            "failover": [{"from": "us-east-1", "to": "us-west-2"}]
        }}}}),
    );
    assert!(
        e.contains("trafficPolicy.loadBalancer.localityLbSetting"),
        "{e}"
    );
    assert!(e.contains("distribute") && e.contains("failover"), "{e}");
}

#[test]
fn topology_label_in_failover_priority_with_failover_is_refused() {
    // istio validation.go: "can not simultaneously set failover and topology label '%s'
    // in failover_priority".
    for label in [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE] {
        let e = error(&json!({"trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {
                "failoverPriority": [LABEL_NETWORK, label],
                "failover": [{"from": "us-east-1", "to": "us-west-2"}]
            }},
            "outlierDetection": {}
        }}));
        assert!(
            e.contains("trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]"),
            "{e}"
        );
        assert!(e.contains(label), "{e}");
    }
}

#[test]
fn distribute_weights_must_sum_to_100() {
    // istio validation.go: "total locality weight %v != 100".
    let e = error(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "distribute": [{"from": "us-east-1/*", "to": {"us-east-1/*": 60, "us-west-2/*": 30}}]
        }}}}),
    );
    assert!(
        e.contains("trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"),
        "{e}"
    );
    assert!(e.contains("90"), "{e}");
}

#[test]
fn bad_failover_region_is_refused() {
    // istio validation.go: failover from/to are plain regions, from != to.
    let e = error(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "failover": [{"from": "us-east-1/us-east-1a", "to": "us-west-2"}]
        }}}}),
    );
    assert!(
        e.contains("trafficPolicy.loadBalancer.localityLbSetting.failover[0].from"),
        "{e}"
    );
    assert!(e.contains("us-east-1/us-east-1a"), "{e}");
    let e = error(
        &json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "failover": [{"from": "us-east-1", "to": "us-east-1"}]
        }}}}),
    );
    assert!(e.contains("failover[0]"), "{e}");
}

#[test]
fn bad_inline_inventory_is_refused_at_configure_time() {
    // config/mod.rs inventory_source: the inline inventory is validated at configure time;
    // the error names the field and the bad entry.
    let e = error(&json!({"inventory": {"endpoints": [
        {"address": "10.0.0.1:80"},
        {"address": "not-an-address"}
    ]}}));
    assert!(e.contains("inventory.endpoints"), "{e}");
    assert!(e.contains("endpoints[1]"), "{e}");
    assert!(e.contains("not-an-address"), "{e}");
    let e = error(&json!({"inventory": {"source": "config", "endpoints": []}}));
    assert!(e.contains("inventory.endpoints"), "{e}");
}

#[test]
fn inline_inventory_is_kept() {
    // config/mod.rs inventory_source: `endpoints` given -> source config.
    let s = settings(&json!({"inventory": {"endpoints": [{"address": "10.0.0.1:80"}]}})).unwrap();
    let InventorySource::Config(specs) = &s.inventory else {
        panic!("expected an inline inventory: {:?}", s.inventory);
    };
    assert_eq!(specs.len(), 1);
    let s = settings(&json!({})).unwrap();
    assert_eq!(
        s.inventory,
        InventorySource::ClusterMetadata {
            namespace: DEFAULT_METADATA_NAMESPACE.into()
        }
    );
}

#[test]
fn invalid_json_is_refused() {
    // config/mod.rs Settings::from_bytes.
    assert!(matches!(
        Settings::from_bytes(b"{not json"),
        Err(ConfigError::Json(_))
    ));
}

// ------------------------------------------------------- seed scenarios

/// The `config` objects of /work/shared/scenarios/seed-*.json, verbatim.
fn seed_configs() -> Vec<(&'static str, Value)> {
    let zone_region = json!({
        "loadBalancer": {
            "simple": "ROUND_ROBIN",
            "localityLbSetting": {
                "enabled": true,
                "failoverPriority": ["topology.kubernetes.io/zone", "topology.kubernetes.io/region"]
            }
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m", "maxEjectionPercent": 50
        }
    });
    vec![
        ("seed-step3-prefer-network.json", json!({})),
        (
            "seed-step4-prefer-close.json",
            json!({"trafficDistribution": "PreferClose"}),
        ),
        (
            "seed-step6-failover-priority.json",
            json!({"trafficDistribution": "PreferClose", "trafficPolicy": zone_region.clone()}),
        ),
        (
            "seed-step6-outlier-ejection.json",
            json!({"trafficPolicy": zone_region}),
        ),
        (
            "seed-step6-zone-region-order.json",
            json!({"trafficPolicy": {
                "loadBalancer": {
                    "simple": "ROUND_ROBIN",
                    "localityLbSetting": {
                        "enabled": true,
                        "failoverPriority": [
                            "topology.istio.io/network",
                            "topology.kubernetes.io/region",
                            "topology.kubernetes.io/zone"
                        ]
                    }
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m", "maxEjectionPercent": 50
                }
            }}),
        ),
    ]
}

fn seed(name: &str) -> Value {
    seed_configs()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap()
}

/// The guide's outlierDetection (consecutive5xxErrors 5, 10s, 3m, 50%).
fn guide_outlier() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 5,
        enforcing_5xx: true,
        consecutive_gateway: 5,
        enforcing_gateway: false,
        split_local_origin: false,
        consecutive_local_origin: 5,
        enforcing_local_origin: true,
        interval: secs(10),
        base_ejection_time: secs(180),
        max_ejection_time: secs(300),
        max_ejection_percent: 50,
    }
}

#[test]
fn seed_step3_prefer_network() {
    // Guide step 3: no DestinationRule, default PreferNetwork ([network]).
    let p = policy(&seed("seed-step3-prefer-network.json"));
    assert_eq!(p.ranking, fp(&[LABEL_NETWORK]));
    assert_eq!(
        p.source,
        RankingSource::TrafficDistribution(TrafficDistribution::PreferNetwork)
    );
    assert_eq!(p.lb, LbPolicy::LeastRequest);
    assert_eq!(p.panic_threshold, 0);
    assert_eq!(p.outlier, None);
}

#[test]
fn seed_step4_prefer_close() {
    // Guide step 4: PreferClose -> [network, region, zone], forced, panic 0.
    let p = policy(&seed("seed-step4-prefer-close.json"));
    assert_eq!(p.ranking, fp(&[LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]));
    assert_eq!(
        p.source,
        RankingSource::TrafficDistribution(TrafficDistribution::PreferClose)
    );
    assert_eq!(p.panic_threshold, 0);
    assert_eq!(p.outlier, None);
}

#[test]
fn seed_step6_failover_priority() {
    // Guide step 6: the DR's [zone, region] beats the PreferClose annotation
    // (GetLocalityLbSetting); the distribution still forces panic 0.
    let p = policy(&seed("seed-step6-failover-priority.json"));
    assert_eq!(p.ranking, fp(&[LABEL_ZONE, LABEL_REGION]));
    assert_eq!(p.source, RankingSource::DestinationRule);
    assert_eq!(p.lb, LbPolicy::RoundRobin);
    assert_eq!(p.panic_threshold, 0);
    assert_eq!(p.outlier, Some(guide_outlier()));
}

#[test]
fn seed_step6_outlier_ejection() {
    // Guide step 6, crash variant: [zone, region], minHealthPercent unset -> panic 0.
    let p = policy(&seed("seed-step6-outlier-ejection.json"));
    assert_eq!(p.ranking, fp(&[LABEL_ZONE, LABEL_REGION]));
    assert_eq!(p.source, RankingSource::DestinationRule);
    assert_eq!(p.lb, LbPolicy::RoundRobin);
    assert_eq!(p.panic_threshold, 0);
    assert_eq!(p.outlier, Some(guide_outlier()));
}

#[test]
fn seed_step6_zone_region_order() {
    // Guide step 6 as meant: [network, region, zone].
    let p = policy(&seed("seed-step6-zone-region-order.json"));
    assert_eq!(p.ranking, fp(&[LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]));
    assert_eq!(p.source, RankingSource::DestinationRule);
    assert_eq!(p.outlier, Some(guide_outlier()));
}

#[test]
fn seed_scenario_files_match_and_parse() {
    // The shared scenarios (../../shared/scenarios from this crate) are the source of the
    // copies above: every file's "config" must parse, and the copies must be verbatim.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/scenarios");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "{} not found: only the embedded copies are checked",
            dir.display()
        );
        return;
    };
    let copies = seed_configs();
    let mut seen = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let scenario: Value = serde_json::from_str(&text).unwrap();
        let config = scenario.get("config").cloned().unwrap_or_else(|| json!({}));
        settings(&config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if let Some((_, copy)) = copies.iter().find(|(n, _)| *n == name) {
            assert_eq!(&config, copy, "{name}: embedded copy differs");
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        copies.len(),
        "some seed files are missing from {}",
        dir.display()
    );
}
