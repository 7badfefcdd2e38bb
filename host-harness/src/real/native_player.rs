//! `--mode native`: no filter. One EDS cluster whose endpoints carry the
//! priorities istiod would assign (the engine's own ranking of the present
//! endpoints), with the DestinationRule's LB policy, outlier detection,
//! panic threshold and locality weighting as Istio writes them: the
//! reference the filter must match.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use locality_failover::config::{LbPolicy as IstioLb, OutlierConfig, Settings};
use locality_failover::inventory::{EndpointSpec, Inventory};
use locality_failover::ranking::rank;

use crate::envoy::{
    Endpoint, Frontend, Layout, LbPolicy, NativeModeConfig, Node, OutlierDetection, RetryPolicy,
};
use crate::error::{HarnessError, Result};
use crate::scenario::{Scenario, ScenarioEndpoint};
use crate::sim_player::CLUSTER;

use super::player::RealEnvoy;
use super::rig::{Rig, XDS_TIMEOUT};

/// Envoy's default `common_lb_config.update_merge_window`.
pub const ENVOY_UPDATE_MERGE_WINDOW: Duration = Duration::from_secs(1);

pub struct NativePlayer {
    rig: Rig,
    scenario: Scenario,
    settings: Settings,
    /// The proxy's labels as the filter reads them: the node's, then the
    /// configuration's `locality` override.
    labels: BTreeMap<String, String>,
    cfg: NativeModeConfig,
    present: BTreeSet<String>,
}

/// Envoy outlier detection exactly as Istio's `applyOutlierDetection`
/// writes it for these settings.
pub fn outlier_detection(o: &OutlierConfig) -> OutlierDetection {
    let enforce = |on: bool| if on { 100 } else { 0 };
    OutlierDetection {
        consecutive_5xx: o.consecutive_5xx,
        enforcing_consecutive_5xx: enforce(o.enforcing_5xx),
        consecutive_gateway_failure: o.consecutive_gateway,
        enforcing_consecutive_gateway_failure: enforce(o.enforcing_gateway),
        interval: o.interval,
        base_ejection_time: o.base_ejection_time,
        max_ejection_percent: o.max_ejection_percent,
        split_external_local_origin_errors: o.split_local_origin,
        consecutive_local_origin_failure: o.consecutive_local_origin,
        enforcing_success_rate: 0,
        max_ejection_time: Some(o.max_ejection_time),
    }
}

pub fn lb_policy(lb: IstioLb) -> LbPolicy {
    match lb {
        IstioLb::RoundRobin => LbPolicy::RoundRobin,
        IstioLb::LeastRequest => LbPolicy::LeastRequest,
        IstioLb::Random => LbPolicy::Random,
    }
}

impl NativePlayer {
    /// `settings` are the scenario's, with their durations already scaled.
    pub fn start(scenario: &Scenario, settings: &Settings, scale: f64) -> Result<NativePlayer> {
        let mut labels = scenario.client_labels.clone();
        for (k, v) in &settings.locality_override {
            labels.insert(k.clone(), v.clone());
        }
        let (upstreams, dir) = Rig::upstreams(scenario, "native")?;
        let mut cfg = NativeModeConfig::new(Vec::new());
        cfg.cluster_name = CLUSTER.to_string();
        cfg.node = Node::with_labels(scenario.client_labels.clone());
        cfg.lb_policy = lb_policy(settings.policy.lb);
        cfg.healthy_panic_threshold = Some(f64::from(settings.policy.panic_threshold));
        cfg.outlier = settings.policy.outlier.as_ref().map(outlier_detection);
        // Istio's default retry predicate: do not retry on a host tried before.
        cfg.retry = scenario.retries.as_ref().map(|r| RetryPolicy {
            previous_hosts: true,
            ..RetryPolicy::new(r.attempts, r.retry_on.join(","))
        });
        // Envoy delays a health change that follows another one within
        // `update_merge_window` (default 1 s, Istio leaves it) until the
        // window ends: a duration like any other, scaled with the rest.
        cfg.update_merge_window = Some(ENVOY_UPDATE_MERGE_WINDOW.mul_f64(scale));
        cfg.frontend = Frontend {
            exact_balance: true,
            ..Frontend::default()
        };
        let present: BTreeSet<String> = scenario.endpoints.iter().map(|e| e.name.clone()).collect();
        let (endpoints, weighted) =
            ranked_endpoints(scenario, settings, &labels, &present, |n| upstreams.addr(n))?;
        cfg.endpoints = endpoints;
        cfg.locality_weighted = weighted.unwrap_or(false);
        let generated = cfg.generate(&Layout::new(dir.path()));
        let mut rig = Rig::start(scenario, "native", upstreams, dir, &generated, scale)?;
        // Envoy ejects on its main thread, after the answer: wait for it.
        rig.settle = true;
        rig.start_clock(rig.envoy_sweeps(CLUSTER, settings.policy.outlier.as_ref()));
        Ok(NativePlayer {
            rig,
            scenario: scenario.clone(),
            settings: settings.clone(),
            labels,
            cfg,
            present,
        })
    }

    /// Rewrites the EDS file for the present endpoints, ranked again as
    /// istiod would for this proxy; waits until applied.
    fn publish(&mut self) -> Result<()> {
        let rig = &self.rig;
        let (endpoints, weighted) = ranked_endpoints(
            &self.scenario,
            &self.settings,
            &self.labels,
            &self.present,
            |n| rig.upstreams.addr(n),
        )?;
        if weighted.is_some_and(|w| w != self.cfg.locality_weighted) {
            // Cannot happen: the rule decides it, not the endpoints.
            return Err(HarnessError::Unsupported {
                field: "endpoints".into(),
                value: format!("{:?}", self.present),
                reason: "locality weighting changed with the endpoints".into(),
            });
        }
        self.cfg.endpoints = endpoints;
        self.rig
            .envoy
            .apply_load_assignment(&self.cfg.load_assignment(), XDS_TIMEOUT)
            .map_err(HarnessError::envoy("EDS update"))?;
        Ok(())
    }
}

/// The present endpoints with their EDS priority, weight and locality
/// weight, from the engine's ranking (endpoints a `distribute` rule leaves
/// out are dropped); and whether Istio sets locality-weighted LB (None
/// when no endpoint is present: the rule decides it, not the endpoints).
pub fn ranked_endpoints(
    scenario: &Scenario,
    settings: &Settings,
    labels: &BTreeMap<String, String>,
    present: &BTreeSet<String>,
    addr: impl Fn(&str) -> Option<std::net::SocketAddr>,
) -> Result<(Vec<Endpoint>, Option<bool>)> {
    let specs: Vec<EndpointSpec> = scenario
        .endpoints
        .iter()
        .filter(|e| present.contains(&e.name))
        .map(ScenarioEndpoint::spec)
        .collect();
    if specs.is_empty() {
        return Ok((Vec::new(), None));
    }
    let inventory = Inventory::from_specs(&specs)?;
    let ranking = rank(&settings.policy.ranking, labels, &inventory);
    let mut out = Vec::new();
    for (i, e) in inventory.endpoints().iter().enumerate() {
        let Some(Some(priority)) = ranking.priority.get(i) else {
            continue;
        };
        let address =
            addr(&e.name).ok_or_else(|| HarnessError::unknown("upstream for endpoint", &e.name))?;
        let mut ep = Endpoint::new(e.name.clone(), address)
            .with_priority(*priority)
            .with_weight(ranking.weight.get(i).copied().unwrap_or(e.weight));
        ep.labels = (*e.labels).clone();
        if let Some(w) = ranking
            .locality
            .get(i)
            .and_then(|l| ranking.locality_weight.get(l))
        {
            ep.locality_weight = Some(*w);
        }
        out.push(ep);
    }
    Ok((out, Some(ranking.locality_weighted)))
}

impl RealEnvoy for NativePlayer {
    fn parts(&mut self) -> (&Scenario, &mut BTreeSet<String>, &mut Rig) {
        (&self.scenario, &mut self.present, &mut self.rig)
    }

    fn publish(&mut self) -> Result<()> {
        NativePlayer::publish(self)
    }

    fn ejected_now(&mut self) -> Vec<String> {
        if super::rig::debug() {
            let prefix = format!("cluster.{CLUSTER}.");
            let stats: Vec<String> = self
                .rig
                .envoy
                .stats_with_prefix(&prefix)
                .into_iter()
                .filter(|(k, _)| {
                    k.contains("membership_")
                        || k.contains("ejections_active")
                        || k.contains("lb_healthy_panic")
                })
                .map(|(k, v)| format!("{}={v}", k.trim_start_matches(&prefix)))
                .collect();
            eprintln!("native: {stats:?}");
        }
        let hosts = self.rig.envoy.hosts(CLUSTER).unwrap_or_default();
        let hosts = hosts
            .iter()
            .map(|h| (h.address.as_str(), h.outlier_ejected));
        self.rig.ejected_names(hosts)
    }
}
