//! Envoy's load balancer over ranked endpoints: priority load with the
//! overprovisioning factor, the panic threshold, and host selection inside a
//! priority (round robin, weighted round robin by EDF, least request with
//! two choices, random). Sources: envoyproxy/envoy
//! `source/extensions/load_balancing_policies/common/load_balancer_impl.cc`
//! (`recalculatePerPriorityState`, `distributeLoad`,
//! `recalculatePerPriorityPanic`, `choosePriority`), `edf_scheduler.h`.
//!
//! Everything that depends on the inventory or the ejection set is computed
//! in [`Balancer::rebuild`]; [`Balancer::pick`] does a bounded amount of work
//! whatever the number of endpoints (an EDF pick is logarithmic in the size
//! of one priority when weights differ).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::config::LbPolicy;
use crate::ranking::Ranking;
use crate::rng::Rng;

/// Envoy's default overprovisioning factor (`kDefaultOverProvisioningFactor`); Istio never changes it.
pub const OVERPROVISIONING_FACTOR: u64 = 140;

/// The endpoint chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Inventory index.
    pub endpoint: usize,
    pub priority: u32,
    /// The priority was in panic: the pick ignored health.
    pub panic: bool,
}

/// Which hosts of a priority a pick draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Healthy,
    All,
}

/// One host source of Envoy's LB (`HostsSource`): a host list with its own
/// round-robin cursor and, when weights differ, its own EDF scheduler.
#[derive(Debug, Default)]
struct HostSet {
    hosts: Vec<usize>,
    rr: u64,
    edf: Option<Edf>,
}

impl HostSet {
    fn new(hosts: Vec<usize>, weights: &[u32], rr: Option<u64>, rng: &mut Rng) -> HostSet {
        let edf = (!weights_equal(&hosts, weights)).then(|| {
            let w: Vec<f64> = hosts
                .iter()
                .map(|h| f64::from(weights.get(*h).copied().unwrap_or(1).max(1)))
                .collect();
            Edf::new(w, rng)
        });
        HostSet {
            hosts,
            // Envoy seeds a new source's cursor at random.
            rr: rr.unwrap_or_else(|| rng.next_u64() >> 1),
            edf,
        }
    }

    /// A position in `hosts`, by the LB policy.
    fn choose(
        &mut self,
        policy: LbPolicy,
        rng: &mut Rng,
        active: &[u32],
        weights: &[u32],
    ) -> Option<usize> {
        let len = self.hosts.len();
        if len == 0 {
            return None;
        }
        let hosts = &self.hosts;
        let active_of = |pos: usize| {
            hosts
                .get(pos)
                .and_then(|h| active.get(*h))
                .copied()
                .unwrap_or(0)
        };
        match (policy, self.edf.as_mut()) {
            // Envoy's random LB ignores host weights.
            (LbPolicy::Random, _) => Some(rng.below(len as u64) as usize),
            (LbPolicy::RoundRobin, Some(edf)) => edf.pick(&|pos| edf_weight(hosts, weights, pos)),
            // Weighted least request: EDF with weight / (active + 1)
            // (`active_request_bias` 1.0), recomputed as each host is re-added.
            (LbPolicy::LeastRequest, Some(edf)) => edf.pick(&|pos| {
                edf_weight(hosts, weights, pos) / f64::from(active_of(pos).saturating_add(1))
            }),
            (LbPolicy::RoundRobin, None) => {
                let pos = (self.rr % len as u64) as usize;
                self.rr = self.rr.wrapping_add(1);
                Some(pos)
            }
            // Two random choices, keep the one with fewer active requests
            // (`LeastRequestLoadBalancer::unweightedHostPick`).
            (LbPolicy::LeastRequest, None) => {
                let a = rng.below(len as u64) as usize;
                let b = rng.below(len as u64) as usize;
                Some(if active_of(b) < active_of(a) { b } else { a })
            }
        }
    }
}

fn edf_weight(hosts: &[usize], weights: &[u32], pos: usize) -> f64 {
    f64::from(
        hosts
            .get(pos)
            .and_then(|h| weights.get(*h))
            .copied()
            .unwrap_or(1)
            .max(1),
    )
}

/// The hosts of one locality inside a priority (locality-weighted LB).
#[derive(Debug, Default)]
struct LocalityGroup {
    id: u32,
    healthy: HostSet,
}

#[derive(Debug, Default)]
struct Level {
    all: HostSet,
    healthy: HostSet,
    localities: Vec<LocalityGroup>,
    /// EDF over the localities' effective weights; `None` when the
    /// priority is not locality-weighted.
    locality_edf: Option<Edf>,
}

impl Level {
    fn hosts(&self, source: Source) -> &[usize] {
        match source {
            Source::Healthy => &self.healthy.hosts,
            Source::All => &self.all.hosts,
        }
    }

    fn set(&mut self, source: Source) -> &mut HostSet {
        match source {
            Source::Healthy => &mut self.healthy,
            Source::All => &mut self.all,
        }
    }
}

/// Priority loads and per-priority host lists for one ranking and health view.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    panic_threshold: u32,
    levels: Vec<Level>,
    load: Vec<u32>,
    panic: Vec<bool>,
    weights: Vec<u32>,
    /// Per inventory index: its position in its priority's healthy list
    /// and in its all-hosts list (`u32::MAX`: not there), so that
    /// [`Balancer::fallbacks`] finds the pick in O(1).
    healthy_pos: Vec<u32>,
    all_pos: Vec<u32>,
}

/// Per-priority state as Envoy computes it, exposed for tests and the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadView {
    pub health: Vec<u32>,
    pub load: Vec<u32>,
    pub panic: Vec<bool>,
}

impl Balancer {
    pub fn new(policy: LbPolicy, panic_threshold: u32) -> Self {
        Balancer {
            policy,
            panic_threshold: panic_threshold.min(100),
            levels: Vec::new(),
            load: Vec::new(),
            panic: Vec::new(),
            weights: Vec::new(),
            healthy_pos: Vec::new(),
            all_pos: Vec::new(),
        }
    }

    /// Recomputes host lists, loads and panic flags. `unhealthy[i]` marks
    /// inventory index `i` as ejected. Round-robin cursors survive, as
    /// Envoy keeps `rr_indexes_` per host source across updates.
    pub fn rebuild(&mut self, ranking: &Ranking, unhealthy: &[bool], rng: &mut Rng) {
        let old = std::mem::take(&mut self.levels);
        let n = ranking.levels as usize;
        let mut all: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut healthy: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, p) in ranking.priority.iter().enumerate() {
            let Some(p) = p.map(|p| p as usize) else {
                continue;
            };
            if let Some(list) = all.get_mut(p) {
                list.push(i);
            }
            if !unhealthy.get(i).copied().unwrap_or(false) {
                if let Some(list) = healthy.get_mut(p) {
                    list.push(i);
                }
            }
        }
        let w = &ranking.weight;
        let mut levels = Vec::with_capacity(n);
        for (p, (all, healthy)) in all.into_iter().zip(healthy).enumerate() {
            let prev = old.get(p);
            let mut level = Level {
                all: HostSet::new(all, w, prev.map(|l| l.all.rr), rng),
                healthy: HostSet::new(healthy, w, prev.map(|l| l.healthy.rr), rng),
                localities: Vec::new(),
                locality_edf: None,
            };
            if ranking.locality_weighted {
                locality_groups(&mut level, prev, ranking, unhealthy, rng);
            }
            levels.push(level);
        }
        self.levels = levels;
        let n_endpoints = ranking.priority.len();
        self.healthy_pos.clear();
        self.healthy_pos.resize(n_endpoints, u32::MAX);
        self.all_pos.clear();
        self.all_pos.resize(n_endpoints, u32::MAX);
        for level in &self.levels {
            for (pos, h) in level.healthy.hosts.iter().enumerate() {
                if let Some(slot) = self.healthy_pos.get_mut(*h) {
                    *slot = pos as u32;
                }
            }
            for (pos, h) in level.all.hosts.iter().enumerate() {
                if let Some(slot) = self.all_pos.get_mut(*h) {
                    *slot = pos as u32;
                }
            }
        }
        self.weights.clone_from(&ranking.weight);
        let view = compute_loads(&self.levels, self.panic_threshold);
        self.load = view.load;
        self.panic = view.panic;
    }

    pub fn view(&self) -> LoadView {
        let mut v = compute_loads(&self.levels, self.panic_threshold);
        v.load.clone_from(&self.load);
        v
    }

    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Chooses a priority with a uniform 1..=100 roll over the loads, then a
    /// host of it (Envoy's `chooseHostSet` + `hostSourceToUse`): all hosts
    /// when the priority panics; else a locality by weight when locality
    /// weighting is on, and a healthy host of it; else a healthy host.
    /// `None` when that priority has no host to offer ("no healthy upstream").
    pub fn pick(&mut self, rng: &mut Rng, active: &[u32]) -> Option<Pick> {
        let roll = rng.below(100) as u32 + 1;
        let mut cumulative = 0;
        let mut chosen = None;
        for (p, load) in self.load.iter().enumerate() {
            cumulative += load;
            if roll <= cumulative {
                chosen = Some(p);
                break;
            }
        }
        let p = chosen?;
        let panic = self.panic.get(p).copied().unwrap_or(false);
        let policy = self.policy;
        let weights = &self.weights;
        let level = self.levels.get_mut(p)?;
        if !panic {
            if let Some(edf) = level.locality_edf.as_mut() {
                if let Some(group) = edf.pick(&|_| 0.0).and_then(|g| level.localities.get_mut(g)) {
                    let pos = group.healthy.choose(policy, rng, active, weights)?;
                    let endpoint = *group.healthy.hosts.get(pos)?;
                    return Some(Pick {
                        endpoint,
                        priority: p as u32,
                        panic,
                    });
                }
            }
        }
        let source = if panic { Source::All } else { Source::Healthy };
        let set = level.set(source);
        let position = set.choose(policy, rng, active, weights)?;
        let endpoint = *set.hosts.get(position)?;
        Some(Pick {
            endpoint,
            priority: p as u32,
            panic,
        })
    }

    /// Where retries should go after `first`: the hosts that follow it in its
    /// priority (the order round robin would take next), then the healthy
    /// hosts of the following priorities, up to `max` entries in all.
    /// Costs O(max), not O(inventory).
    pub fn fallbacks(&self, first: Pick, max: usize, out: &mut Vec<usize>) {
        out.clear();
        out.push(first.endpoint);
        let mut p = first.priority as usize;
        let source = if first.panic {
            Source::All
        } else {
            Source::Healthy
        };
        if let Some(level) = self.levels.get(p) {
            let hosts = level.hosts(source);
            let index = match source {
                Source::Healthy => &self.healthy_pos,
                Source::All => &self.all_pos,
            };
            let start = index
                .get(first.endpoint)
                .map(|p| *p as usize)
                .filter(|p| hosts.get(*p) == Some(&first.endpoint));
            if let Some(start) = start {
                for k in 1..hosts.len() {
                    if out.len() >= max {
                        return;
                    }
                    if let Some(h) = hosts.get((start + k) % hosts.len()) {
                        out.push(*h);
                    }
                }
            }
        }
        p += 1;
        while out.len() < max {
            let Some(level) = self.levels.get(p) else {
                return;
            };
            for h in level.healthy.hosts.iter().take(max - out.len()) {
                out.push(*h);
            }
            p += 1;
        }
    }
}

/// Splits a priority into its localities and builds the locality
/// scheduler over `weight x min(1, 1.4 x healthy / hosts)` (Envoy
/// `effectiveLocalityWeight`); a locality's weight is the sum of its
/// endpoints' weights in this priority (istiod) unless `distribute` set one.
fn locality_groups(
    level: &mut Level,
    prev: Option<&Level>,
    ranking: &Ranking,
    unhealthy: &[bool],
    rng: &mut Rng,
) {
    let locality_of = |h: usize| ranking.locality.get(h).copied().unwrap_or(0);
    let mut ids: Vec<u32> = level.all.hosts.iter().map(|h| locality_of(*h)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut effective = Vec::with_capacity(ids.len());
    for id in ids {
        let members: Vec<usize> = level
            .all
            .hosts
            .iter()
            .copied()
            .filter(|h| locality_of(*h) == id)
            .collect();
        let healthy: Vec<usize> = members
            .iter()
            .copied()
            .filter(|h| !unhealthy.get(*h).copied().unwrap_or(false))
            .collect();
        let weight = ranking
            .locality_weight
            .get(&id)
            .copied()
            .unwrap_or_else(|| {
                members
                    .iter()
                    .map(|h| ranking.weight.get(*h).copied().unwrap_or(1))
                    .sum()
            });
        let ratio = healthy.len() as f64 / members.len().max(1) as f64;
        effective
            .push(f64::from(weight) * (OVERPROVISIONING_FACTOR as f64 / 100.0 * ratio).min(1.0));
        let rr = prev
            .and_then(|l| l.localities.iter().find(|g| g.id == id))
            .map(|g| g.healthy.rr);
        level.localities.push(LocalityGroup {
            id,
            healthy: HostSet::new(healthy, &ranking.weight, rr, rng),
        });
    }
    if effective.iter().any(|w| *w > 0.0) {
        level.locality_edf = Some(Edf::new(effective, rng));
    }
}

fn weights_equal(hosts: &[usize], weights: &[u32]) -> bool {
    let mut it = hosts.iter().map(|h| weights.get(*h).copied().unwrap_or(1));
    match it.next() {
        None => true,
        Some(first) => it.all(|w| w == first),
    }
}

/// Envoy's `recalculatePerPriorityState` + `recalculatePerPriorityPanic`.
fn compute_loads(levels: &[Level], panic_threshold: u32) -> LoadView {
    let n = levels.len();
    let health: Vec<u32> = levels
        .iter()
        .map(|l| {
            if l.all.hosts.is_empty() {
                0
            } else {
                let h = OVERPROVISIONING_FACTOR * l.healthy.hosts.len() as u64
                    / l.all.hosts.len() as u64;
                h.min(100) as u32
            }
        })
        .collect();
    let mut load = vec![0u32; n];
    let mut panic = vec![false; n];
    if n == 0 {
        return LoadView {
            health,
            load,
            panic,
        };
    }
    let total: u32 = health.iter().sum::<u32>().min(100);
    if total == 0 && panic_threshold == 0 {
        // Everything unhealthy and panic disabled: P0 takes the load and has
        // no host to give (503 "no healthy upstream").
        if let Some(l) = load.first_mut() {
            *l = 100;
        }
        return LoadView {
            health,
            load,
            panic,
        };
    }
    if total > 0 {
        distribute(&mut load, &health, total);
    }
    for (p, level) in levels.iter().enumerate() {
        let in_panic = total != 100 && {
            let healthy_percent = if level.all.hosts.is_empty() {
                0
            } else {
                100 * level.healthy.hosts.len() as u64 / level.all.hosts.len() as u64
            };
            healthy_percent < u64::from(panic_threshold)
        };
        if let Some(slot) = panic.get_mut(p) {
            *slot = in_panic;
        }
    }
    if panic.iter().all(|p| *p) {
        // Every priority in panic: spread load by host counts.
        let counts: Vec<u32> = levels.iter().map(|l| l.all.hosts.len() as u32).collect();
        let sum: u32 = counts.iter().sum();
        if sum > 0 {
            load.iter_mut().for_each(|l| *l = 0);
            let mut remaining = 100u32;
            for (l, c) in load.iter_mut().zip(&counts) {
                *l = remaining.min((c * 100).checked_div(sum).unwrap_or(0));
                remaining -= *l;
            }
            if let Some(first) = counts.iter().position(|c| *c > 0) {
                if let Some(l) = load.get_mut(first) {
                    *l += remaining;
                }
            }
        }
    }
    LoadView {
        health,
        load,
        panic,
    }
}

/// Envoy's `distributeLoad`: each priority takes `health * 100 / total`
/// of what is left, in order; the rounding remainder goes to the first
/// priority with any health.
fn distribute(load: &mut [u32], health: &[u32], total: u32) {
    let mut remaining = 100u32;
    let mut first_available = None;
    for (p, (l, h)) in load.iter_mut().zip(health).enumerate() {
        if first_available.is_none() && *h > 0 {
            first_available = Some(p);
        }
        *l = remaining.min(h * 100 / total);
        remaining -= *l;
    }
    if let Some(l) = first_available.and_then(|p| load.get_mut(p)) {
        *l += remaining;
    }
}

/// Earliest-deadline-first scheduler, as Envoy's `EdfScheduler`: each entry
/// is due every `1/weight`; ties go to the earlier insertion. Entries with
/// weight 0 are never scheduled.
#[derive(Debug)]
struct Edf {
    heap: BinaryHeap<Reverse<EdfEntry>>,
    weights: Vec<f64>,
    next_order: u64,
}

#[derive(Debug, Clone, Copy)]
struct EdfEntry {
    deadline: f64,
    order: u64,
    position: usize,
}

impl PartialEq for EdfEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for EdfEntry {}
impl PartialOrd for EdfEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EdfEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.deadline
            .total_cmp(&other.deadline)
            .then(self.order.cmp(&other.order))
    }
}

impl Edf {
    fn new(weights: Vec<f64>, rng: &mut Rng) -> Self {
        let mut edf = Edf {
            heap: BinaryHeap::with_capacity(weights.len()),
            weights,
            next_order: 0,
        };
        for position in 0..edf.weights.len() {
            let w = edf.weights.get(position).copied().unwrap_or(0.0);
            edf.add(position, 0.0, w);
        }
        // Envoy starts each scheduler after a random number of picks so that
        // workers do not all begin with the same host.
        let warmup = rng.below(edf.heap.len() as u64);
        for _ in 0..warmup {
            edf.pick(&|_| 0.0);
        }
        edf
    }

    fn add(&mut self, position: usize, now: f64, weight: f64) {
        if weight > 0.0 && weight.is_finite() {
            self.heap.push(Reverse(EdfEntry {
                deadline: now + 1.0 / weight,
                order: self.next_order,
                position,
            }));
            self.next_order += 1;
        }
    }

    /// Pops the earliest entry and re-adds it with its weight: the static one,
    /// or `dynamic(position)` when that is positive (least request).
    fn pick(&mut self, dynamic: &dyn Fn(usize) -> f64) -> Option<usize> {
        let Reverse(top) = self.heap.pop()?;
        let d = dynamic(top.position);
        let w = if d > 0.0 {
            d
        } else {
            self.weights.get(top.position).copied().unwrap_or(0.0)
        };
        self.add(top.position, top.deadline, w);
        Some(top.position)
    }
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
