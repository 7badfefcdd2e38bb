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

/// The outcome of ranking an inventory for one proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    /// Compacted priority per inventory index; `None` for an endpoint that
    /// receives no traffic at all (a locality `distribute` leaves out).
    pub priority: Vec<Option<u32>>,
    /// Load-balancing weight per inventory index.
    pub weight: Vec<u32>,
    /// Number of priorities (0..levels).
    pub levels: u32,
    /// Locality id (region/zone/subzone) per inventory index.
    pub locality: Vec<u32>,
    /// Envoy picks a locality by weight before a host: Istio >= 1.24 sets
    /// `LocalityWeightedLbConfig` when failover is enabled with `failover`
    /// or `failoverPriority`, and with `distribute`.
    pub locality_weighted: bool,
    /// Locality weights set by `distribute` (by locality id); otherwise a
    /// locality weighs the sum of its endpoints' weights in its priority.
    pub locality_weight: BTreeMap<u32, u32>,
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
    let weight: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
    let (locality, localities) = locality_ids(endpoints);
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
            let (raw, locality_weight) =
                distribute(rules, client, endpoints, &locality, &localities);
            let (priority, levels) = compact(&raw);
            return Ranking {
                priority,
                weight,
                levels,
                locality,
                locality_weighted: true,
                locality_weight,
            };
        }
    };
    let (priority, levels) = compact(&raw);
    let locality_weighted = match rule {
        RankingRule::FailoverPriority { .. } => true,
        RankingRule::LocalityTiers { failover } => !failover.is_empty(),
        RankingRule::Flat | RankingRule::Distribute(_) => false,
    };
    Ranking {
        priority,
        weight,
        levels,
        locality,
        locality_weighted,
        locality_weight: BTreeMap::new(),
    }
}

/// Numbers each distinct `region/zone/subzone`; returns the id per
/// endpoint and the localities by id.
fn locality_ids(endpoints: &[Endpoint]) -> (Vec<u32>, Vec<[String; 3]>) {
    let mut localities: Vec<[String; 3]> = Vec::new();
    let mut index: BTreeMap<[String; 3], u32> = BTreeMap::new();
    let ids = endpoints
        .iter()
        .map(|e| {
            let key = locality_of_endpoint(e);
            *index.entry(key.clone()).or_insert_with(|| {
                localities.push(key);
                (localities.len() - 1) as u32
            })
        })
        .collect();
    (ids, localities)
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
/// locality gives each locality matched by a `to` key the weight
/// `ceil(groupWeight x w / sum of the groupWeights that key matches)`;
/// localities no `to` key matches get no traffic. No failover: one priority.
/// Without a matching rule everything stays at priority 0 with its weights.
fn distribute(
    rules: &[DistributeRule],
    client: &Labels,
    endpoints: &[Endpoint],
    locality: &[u32],
    localities: &[[String; 3]],
) -> (Vec<Option<u64>>, BTreeMap<u32, u32>) {
    let client_locality = locality_of_labels(client);
    let Some(rule) = rules
        .iter()
        .find(|r| locality_match(&client_locality, &r.from))
    else {
        return (endpoints.iter().map(|_| Some(0)).collect(), BTreeMap::new());
    };
    // Weight of each locality group: the sum of its endpoints' weights.
    let mut group_weight: BTreeMap<u32, u64> = BTreeMap::new();
    for (e, id) in endpoints.iter().zip(locality) {
        *group_weight.entry(*id).or_default() += u64::from(e.weight);
    }
    let mut weights: BTreeMap<u32, u32> = BTreeMap::new();
    let mut matched: BTreeMap<u32, bool> = BTreeMap::new();
    for (to, w) in &rule.to {
        let groups: Vec<u32> = group_weight
            .keys()
            .copied()
            .filter(|id| !matched.contains_key(id))
            .filter(|id| {
                localities
                    .get(*id as usize)
                    .is_some_and(|l| locality_match(l, to))
            })
            .collect();
        let total: u64 = groups.iter().filter_map(|id| group_weight.get(id)).sum();
        for id in groups {
            matched.insert(id, true);
            let original = group_weight.get(&id).copied().unwrap_or(1);
            let share = (original * u64::from(*w)).div_ceil(total.max(1));
            // istiod only sets a weight that is positive; 0 keeps the group's own.
            let value = if share > 0 { share } else { original };
            weights.insert(id, u32::try_from(value).unwrap_or(u32::MAX));
        }
    }
    let raw = locality
        .iter()
        .map(|id| matched.contains_key(id).then_some(0))
        .collect();
    (raw, weights)
}

fn locality_of_labels(labels: &Labels) -> [String; 3] {
    [LABEL_REGION, LABEL_ZONE, LABEL_SUBZONE].map(|l| labels.get(l).cloned().unwrap_or_default())
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
