//! Whether a scenario can play on a waypoint, and if not, why.
//!
//! A scenario is written with every pod's labels in view. On a waypoint,
//! Envoy receives from istiod only what EDS carries (`waypoint-reality.md`
//! §1.4): per pod its locality (region, zone, subzone), its cluster id
//! (`istio.workload`) and whether it is behind an east-west gateway (the
//! `inner_connect_originate` listener: another network). istiod ranks with
//! the pods' full labels, except for remote-network pods, which it replaces
//! by one gateway endpoint per locality group labelled with its network and
//! cluster only (`EndpointsByNetworkFilter`, `AugmentLabels(nil, cluster,
//! "", "", network)`).
//!
//! Pods on another network reach a waypoint in one of two shapes
//! ([`Shape`]): behind their network's east-west gateway (istiod 1.28+ with a
//! known gateway), or as plain pods (istiod with no gateway for that
//! network: the golden files). A scenario plays in the first shape that
//! applies:
//!
//! 1. the ranking by what Envoy sees equals the ranking by the full labels
//!    (in the flat shape Envoy cannot tell another network from its own);
//! 2. gateway shape: istiod's ranking of gateway endpoints (network and
//!    cluster only) equals it too, and each remote locality group has one
//!    pod (the gateway, not Envoy, picks among several, and the attempts
//!    could not be told apart);
//! 3. any shape: no step relies on Envoy retrying a refused pod on
//!    `connect-failure`: behind the CONNECT tunnel a refused pod ends the
//!    tunnel after the internal connection was made, which the router
//!    reports as a reset (UC), not a connect failure (UF).
//!
//! Otherwise the runner prints `SKIP` with the reasons.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::modes;
use crate::scenario::{EndpointState, Scenario};
use crate::sim::Behavior;

use locality_failover::config::{
    LABEL_CLUSTER, LABEL_NETWORK, LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE,
};

/// Labels Envoy learns about a pod from EDS.
const SEEN_BY_ENVOY: [&str; 5] = [
    LABEL_NETWORK,
    LABEL_REGION,
    LABEL_ZONE,
    LABEL_SUBZONE,
    LABEL_CLUSTER,
];
/// The network value the filter can know for a pod behind a gateway: only
/// that it is not its own.
const OTHER_NETWORK: &str = "(behind an east-west gateway)";

/// Names of the pods on another network than the waypoint (the client).
pub fn remote_pods(scenario: &Scenario) -> BTreeSet<String> {
    let own = scenario.client_labels.get(LABEL_NETWORK);
    scenario
        .endpoints
        .iter()
        .filter(|e| own.is_some() && e.labels.get(LABEL_NETWORK) != own)
        .map(|e| e.name.clone())
        .collect()
}

fn keep(labels: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ranking_with(
    scenario: &Scenario,
    client: BTreeMap<String, String>,
    relabel: impl Fn(&str, &BTreeMap<String, String>) -> BTreeMap<String, String>,
) -> Result<Vec<(String, u32)>> {
    let mut s = scenario.clone();
    s.client_labels = client;
    for e in &mut s.endpoints {
        e.labels = relabel(&e.name, &e.labels);
    }
    modes::ranking(&s)
}

fn ranking_difference(full: &[(String, u32)], other: &[(String, u32)]) -> Option<String> {
    let diff: Vec<String> = full
        .iter()
        .filter_map(|(name, p)| {
            let q = other.iter().find(|(n, _)| n == name).map(|(_, q)| *q);
            (q != Some(*p)).then(|| {
                format!(
                    "{name} P{p} -> {}",
                    q.map_or("none".into(), |q| format!("P{q}"))
                )
            })
        })
        .collect();
    (!diff.is_empty()).then(|| diff.join(", "))
}

/// How the pods on another network than the waypoint reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Behind their network's east-west gateway: istiod 1.28+ with a known
    /// gateway writes one `inner_connect_originate` endpoint per locality
    /// group (the filter can tell they are on another network).
    Gateway,
    /// As plain `connect_originate` pods: what istiod writes when it knows
    /// no gateway for their network (the golden files' shape); Envoy cannot
    /// tell their network from its own.
    Flat,
}

/// Whether a scenario plays on the waypoint, and in which shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applicability {
    Plays(Shape),
    /// It cannot apply there; the reason is printed with the skip.
    Skip(String),
}

impl Applicability {
    /// The reason of a skip, `None` when the scenario plays.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            Applicability::Plays(_) => None,
            Applicability::Skip(why) => Some(why),
        }
    }
}

/// The shape a scenario plays in (the gateway one when it applies, else
/// the flat one), or why neither applies.
pub fn decide(scenario: &Scenario) -> Result<Applicability> {
    if let Some(why) = common_reason(scenario) {
        return Ok(Applicability::Skip(why));
    }
    let gateway = gateway_reason(scenario)?;
    let Some(gateway) = gateway else {
        return Ok(Applicability::Plays(Shape::Gateway));
    };
    let flat = seen_reason(scenario, &BTreeSet::new(), "")?;
    Ok(match flat {
        None => Applicability::Plays(Shape::Flat),
        Some(flat) => Applicability::Skip(format!(
            "behind east-west gateways: {gateway}; as plain endpoints (no gateway): {flat}"
        )),
    })
}

/// The remote pods of `shape` (none in the flat shape).
pub fn remote_in(scenario: &Scenario, shape: Shape) -> BTreeSet<String> {
    match shape {
        Shape::Gateway => remote_pods(scenario),
        Shape::Flat => BTreeSet::new(),
    }
}

/// (1) The ranking by what Envoy sees: `remote` pods' network is only
/// "not mine", every other pod's network is the waypoint's own.
fn seen_reason(
    scenario: &Scenario,
    remote: &BTreeSet<String>,
    context: &str,
) -> Result<Option<String>> {
    let full = modes::ranking(scenario)?;
    let own = scenario.client_labels.get(LABEL_NETWORK).cloned();
    let seen = ranking_with(
        scenario,
        keep(&scenario.client_labels, &SEEN_BY_ENVOY),
        |n, l| {
            let mut l = keep(l, &SEEN_BY_ENVOY);
            match (remote.contains(n), &own) {
                (true, _) => {
                    l.insert(LABEL_NETWORK.into(), OTHER_NETWORK.into());
                }
                (false, Some(own)) => {
                    l.insert(LABEL_NETWORK.into(), own.clone());
                }
                (false, None) => {
                    l.remove(LABEL_NETWORK);
                }
            }
            l
        },
    )?;
    Ok(ranking_difference(&full, &seen).map(|d| {
        format!(
            "its ranking needs labels Envoy never receives (EDS carries locality, cluster id{context}; custom labels, hostnames and networks stay in istiod): {d}"
        )
    }))
}

fn gateway_reason(scenario: &Scenario) -> Result<Option<String>> {
    let remote = remote_pods(scenario);
    if let Some(why) = seen_reason(scenario, &remote, " and gateway or not")? {
        return Ok(Some(why));
    }
    // (2) istiod's ranking of east-west gateway endpoints.
    let full = modes::ranking(scenario)?;
    let istiod = ranking_with(scenario, scenario.client_labels.clone(), |n, l| {
        if remote.contains(n) {
            keep(l, &[LABEL_NETWORK, LABEL_CLUSTER])
        } else {
            l.clone()
        }
    })?;
    if let Some(d) = ranking_difference(&full, &istiod) {
        return Ok(Some(format!(
            "istiod ranks an east-west gateway endpoint by network and cluster only, not by region/zone: {d}"
        )));
    }
    // (3) One remote pod per gateway endpoint.
    let mut groups: BTreeMap<Vec<Option<&String>>, Vec<&str>> = BTreeMap::new();
    for e in scenario
        .endpoints
        .iter()
        .filter(|e| remote.contains(&e.name))
    {
        let key = [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE]
            .iter()
            .map(|k| e.labels.get(*k))
            .collect();
        groups.entry(key).or_default().push(&e.name);
    }
    if let Some(g) = groups.values().find(|g| g.len() > 1) {
        return Ok(Some(format!(
            "pods {} share one locality on another network: istiod gives them one gateway endpoint, and the gateway, not Envoy, picks among them",
            g.join(", ")
        )));
    }
    Ok(None)
}

/// (4) connect-failure retries of a refused pod (any shape).
fn common_reason(scenario: &Scenario) -> Option<String> {
    let retries_connect_only = scenario.retries.as_ref().is_some_and(|r| {
        r.retry_on.iter().any(|o| o == "connect-failure")
            && !r.retry_on.iter().any(|o| o == "5xx" || o == "reset")
    });
    let refuses = scenario.steps.iter().any(|s| {
        s.set
            .iter()
            .any(|(_, st)| *st == EndpointState::Answers(Behavior::Refused))
    });
    (retries_connect_only && refuses).then(|| {
        "a refused pod behind the CONNECT tunnel is an upstream reset (UC) to the waypoint's router, not a connect failure (UF): retryOn connect-failure does not retry it".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(rel: &str) -> Scenario {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
        Scenario::load(&p).unwrap()
    }

    #[test]
    fn the_guides_steps_apply() {
        for f in [
            "seed-step3-prefer-network",
            "seed-step4-prefer-close",
            "seed-step6-outlier-ejection",
        ] {
            let s = load(&format!("../shared/scenarios/{f}.json"));
            assert_eq!(
                decide(&s).unwrap(),
                Applicability::Plays(Shape::Gateway),
                "{f}"
            );
        }
    }

    #[test]
    fn custom_labels_and_hostnames_do_not() {
        for f in ["06-custom-label-prefix", "10-prefer-same-node"] {
            let s = load(&format!("tests/scenarios/{f}.json"));
            let decision = decide(&s).unwrap();
            let why = decision.skip_reason().expect(f);
            assert!(why.contains("never receives"), "{f}: {why}");
        }
    }

    #[test]
    fn without_a_network_ranking_pods_of_other_networks_play_flat() {
        let s = load("tests/scenarios/11-default-locality-tiers.json");
        assert_eq!(decide(&s).unwrap(), Applicability::Plays(Shape::Flat));
    }

    #[test]
    fn connect_failure_retries_of_refused_pods_do_not() {
        let s = load("tests/scenarios/25-refused-with-connect-failure-retry.json");
        let decision = decide(&s).unwrap();
        let why = decision.skip_reason().unwrap();
        assert!(why.contains("UC"), "{why}");
    }
}
