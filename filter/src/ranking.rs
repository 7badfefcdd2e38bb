//! Endpoint priorities, computed in one place exactly as istiod assigns EDS
//! priorities for the proxy that receives them (`pilot/pkg/networking/core/
//! loadbalancer/loadbalancer.go`, Istio 1.31 semantics; see
//! `shared/spec/istio-envoy-reference.md` §1-2).
//!
//! Ranking is recomputed only when the inventory, the configuration or the
//! proxy's own labels change; the request path reads the result.

use std::collections::BTreeMap;

use crate::config::{
    DistributeRule, PriorityLabel, RankingRule, RegionFailover, LABEL_NETWORK, LABEL_REGION,
    LABEL_SUBZONE, LABEL_ZONE,
};
use crate::inventory::{Endpoint, Inventory, Labels};

/// Scale applied to locality weights under `distribute`, so that the
/// per-endpoint share of a locality weight stays an integer.
const DISTRIBUTE_SCALE: u64 = 1000;

/// The outcome of ranking an inventory for one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking {
    /// Compacted priority per inventory index; `None` for an endpoint that
    /// receives no traffic at all (a locality `distribute` leaves out).
    pub priority: Vec<Option<u32>>,
    /// Load-balancing weight per inventory index (rescaled by `distribute`).
    pub weight: Vec<u32>,
    /// Number of priorities (0..levels).
    pub levels: u32,
}

impl Ranking {
    /// Endpoints of each priority, in inventory order.
    pub fn members(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.levels as usize];
        for (i, p) in self.priority.iter().enumerate() {
            if let Some(slot) = p.and_then(|p| out.get_mut(p as usize)) {
                slot.push(i);
            }
        }
        out
    }
}

/// Ranks every endpoint of `inventory` for a proxy with `client` labels.
pub fn rank(rule: &RankingRule, client: &Labels, inventory: &Inventory) -> Ranking {
    let endpoints = inventory.endpoints();
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
    let raw: Vec<Option<u64>> = match rule {
        RankingRule::Flat => endpoints.iter().map(|_| Some(0)).collect(),
        RankingRule::FailoverPriority { labels, failover } => endpoints
            .iter()
            .map(|e| {
                // istiod skips failoverPriority for a proxy without labels.
                let p = if client.is_empty() {
                    0
                } else {
                    u64::from(failover_priority(labels, client, e))
                };
                Some(if failover.is_empty() {
                    p
                } else {
                    p * 5 + u64::from(locality_tier(client, e, failover))
                })
            })
            .collect(),
        RankingRule::LocalityTiers { failover } => endpoints
            .iter()
            .map(|e| Some(u64::from(locality_tier(client, e, failover))))
            .collect(),
        RankingRule::Distribute(rules) => {
            return distribute(rules, client, endpoints);
        }
    };
    let (priority, levels) = compact(&raw);
    Ranking {
        priority,
        weight: weights,
        levels,
    }
}

/// `applyFailoverPriorityPerLocality`: walk the ordered labels; the first
/// label whose value differs gives `n - j`; all equal gives 0. A label
/// missing on both sides is equal. `label=value` compares with `value`
/// instead of the proxy's own label. Istio 1.31 network-first rule: when the
/// list starts with exactly `topology.istio.io/network`, a network mismatch
/// does not stop the walk; it adds `n` to the rank of the remaining labels.
pub fn failover_priority(labels: &[PriorityLabel], client: &Labels, endpoint: &Endpoint) -> u32 {
    let n = labels.len() as u32;
    let network_first = labels
        .first()
        .is_some_and(|l| l.name == LABEL_NETWORK && l.value.is_none());
    let mut adjust = 0;
    for (j, label) in labels.iter().enumerate() {
        let want = match &label.value {
            Some(v) => v.as_str(),
            None => client.get(&label.name).map(String::as_str).unwrap_or(""),
        };
        if want != endpoint.label(&label.name) {
            if j == 0 && network_first {
                adjust = n;
                continue;
            }
            return n - j as u32 + adjust;
        }
    }
    adjust
}

/// `util.LbPriority` plus `applyLocalityFailover`'s `failover` override:
/// 0 same region/zone/subzone, 1 same region/zone, 2 same region, 3 other
/// region; with a `failover` entry for the proxy's region, other regions
/// that are not its `to` drop to 4.
pub fn locality_tier(client: &Labels, endpoint: &Endpoint, failover: &[RegionFailover]) -> u32 {
    let get = |name: &str| client.get(name).map(String::as_str).unwrap_or("");
    let region = get(LABEL_REGION);
    if region == endpoint.label(LABEL_REGION) {
        if get(LABEL_ZONE) == endpoint.label(LABEL_ZONE) {
            if get(LABEL_SUBZONE) == endpoint.label(LABEL_SUBZONE) {
                return 0;
            }
            return 1;
        }
        return 2;
    }
    match failover.iter().find(|f| f.from == region) {
        Some(f) if endpoint.label(LABEL_REGION) != f.to => 4,
        _ => 3,
    }
}

/// Renumbers distinct raw priorities to 0..k in order, with no gaps.
fn compact(raw: &[Option<u64>]) -> (Vec<Option<u32>>, u32) {
    let mut distinct: Vec<u64> = raw.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let priority = raw
        .iter()
        .map(|p| {
            p.and_then(|p| distinct.binary_search(&p).ok())
                .map(|i| i as u32)
        })
        .collect();
    (priority, distinct.len() as u32)
}

/// `applyLocalityWeights`: the first rule whose `from` matches the proxy's
/// locality gives each `to` locality a share of the traffic; localities it
/// does not name get none. Envoy then picks a locality by weight and a host
/// inside it; here each endpoint carries its share of its locality's weight,
/// which gives the same long-run split with one weighted pick.
fn distribute(rules: &[DistributeRule], client: &Labels, endpoints: &[Endpoint]) -> Ranking {
    let client_locality = locality_of_labels(client);
    let Some(rule) = rules.iter().find(|r| locality_match(&client_locality, &r.from)) else {
        let flat: Vec<Option<u64>> = endpoints.iter().map(|_| Some(0)).collect();
        let (priority, levels) = compact(&flat);
        return Ranking {
            priority,
            weight: endpoints.iter().map(|e| e.weight).collect(),
            levels,
        };
    };
    let mut assigned: Vec<Option<(usize, u64)>> = vec![None; endpoints.len()];
    for (to_index, (to, _)) in rule.to.iter().enumerate() {
        for (i, e) in endpoints.iter().enumerate() {
            if assigned.get(i).copied().flatten().is_none()
                && locality_match(&locality_of_endpoint(e), to)
            {
                if let Some(slot) = assigned.get_mut(i) {
                    *slot = Some((to_index, u64::from(e.weight)));
                }
            }
        }
    }
    let mut group_total: BTreeMap<usize, u64> = BTreeMap::new();
    for (group, w) in assigned.iter().flatten() {
        *group_total.entry(*group).or_default() += w;
    }
    let mut priority = Vec::with_capacity(endpoints.len());
    let mut weight = Vec::with_capacity(endpoints.len());
    for a in &assigned {
        match a {
            Some((group, w)) => {
                let locality_weight = rule.to.get(*group).map(|(_, lw)| u64::from(*lw)).unwrap_or(0);
                let total = group_total.get(group).copied().unwrap_or(1).max(1);
                let share = (locality_weight * DISTRIBUTE_SCALE * w).div_ceil(total);
                if share == 0 {
                    priority.push(None);
                    weight.push(0);
                } else {
                    priority.push(Some(0));
                    weight.push(u32::try_from(share).unwrap_or(u32::MAX));
                }
            }
            None => {
                priority.push(None);
                weight.push(0);
            }
        }
    }
    let levels = u32::from(priority.iter().any(Option::is_some));
    Ranking {
        priority,
        weight,
        levels,
    }
}

fn locality_of_labels(labels: &Labels) -> [String; 3] {
    [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE]
        .map(|l| labels.get(l).cloned().unwrap_or_default())
}

fn locality_of_endpoint(e: &Endpoint) -> [String; 3] {
    [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE].map(|l| e.label(l).to_string())
}

/// `util.LocalityMatch`: `region/zone/subzone` with `*` wildcards; an empty
/// zone or subzone in the rule matches anything.
pub fn locality_match(locality: &[String; 3], rule: &str) -> bool {
    let mut parts = rule.splitn(3, '/');
    let region = parts.next().unwrap_or("");
    let zone = parts.next().unwrap_or("");
    let subzone = parts.next().unwrap_or("");
    let [r, z, s] = locality;
    (region == "*" || region == r)
        && (zone == "*" || zone.is_empty() || zone == z)
        && (subzone == "*" || subzone.is_empty() || subzone == s)
}

#[cfg(test)]
#[path = "ranking_tests.rs"]
mod tests;
