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

#[derive(Debug, Default)]
struct Level {
    all: Vec<usize>,
    healthy: Vec<usize>,
    rr_all: u64,
    rr_healthy: u64,
    edf_all: Option<Edf>,
    edf_healthy: Option<Edf>,
}

impl Level {
    fn hosts(&self, source: Source) -> &[usize] {
        match source {
            Source::Healthy => &self.healthy,
            Source::All => &self.all,
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
        }
    }

    /// Recomputes host lists, loads and panic flags. `unhealthy[i]` marks
    /// inventory index `i` as ejected. Round-robin cursors survive, as
    /// Envoy keeps `rr_indexes_` per host source across updates.
    pub fn rebuild(&mut self, ranking: &Ranking, unhealthy: &[bool], rng: &mut Rng) {
        let mut old = std::mem::take(&mut self.levels);
        let mut levels: Vec<Level> = (0..ranking.levels).map(|_| Level::default()).collect();
        for (i, p) in ranking.priority.iter().enumerate() {
            let Some(level) = p.and_then(|p| levels.get_mut(p as usize)) else {
                continue;
            };
            level.all.push(i);
            if !unhealthy.get(i).copied().unwrap_or(false) {
                level.healthy.push(i);
            }
        }
        for (p, level) in levels.iter_mut().enumerate() {
            match old.get_mut(p) {
                Some(prev) => {
                    level.rr_all = prev.rr_all;
                    level.rr_healthy = prev.rr_healthy;
                }
                // Envoy seeds a new source's cursor at random.
                None => {
                    level.rr_all = rng.next_u64() >> 1;
                    level.rr_healthy = rng.next_u64() >> 1;
                }
            }
            if !weights_equal(&level.all, &ranking.weight) {
                level.edf_all = Some(Edf::new(&level.all, &ranking.weight, rng));
                level.edf_healthy = Some(Edf::new(&level.healthy, &ranking.weight, rng));
            }
        }
        self.levels = levels;
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
    /// host of it. `None` when that priority has no host to offer (Envoy's
    /// "no healthy upstream").
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
        let source = if panic { Source::All } else { Source::Healthy };
        let policy = self.policy;
        let level = self.levels.get_mut(p)?;
        let position = choose(level, source, policy, rng, active)?;
        let endpoint = *level.hosts(source).get(position)?;
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
        let source = if first.panic { Source::All } else { Source::Healthy };
        if let Some(level) = self.levels.get(p) {
            let hosts = level.hosts(source);
            if let Some(start) = position_of(hosts, first.endpoint) {
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
            for h in level.healthy.iter().take(max - out.len()) {
                out.push(*h);
            }
            p += 1;
        }
    }
}

/// Position of `endpoint` in a host list. Lists are in inventory order, so
/// a binary search finds it.
fn position_of(hosts: &[usize], endpoint: usize) -> Option<usize> {
    hosts.binary_search(&endpoint).ok()
}

fn weights_equal(hosts: &[usize], weights: &[u32]) -> bool {
    let mut it = hosts.iter().map(|h| weights.get(*h).copied().unwrap_or(1));
    match it.next() {
        None => true,
        Some(first) => it.all(|w| w == first),
    }
}

fn choose(
    level: &mut Level,
    source: Source,
    policy: LbPolicy,
    rng: &mut Rng,
    active: &[u32],
) -> Option<usize> {
    let len = level.hosts(source).len();
    if len == 0 {
        return None;
    }
    let edf = match source {
        Source::Healthy => level.edf_healthy.as_mut(),
        Source::All => level.edf_all.as_mut(),
    };
    match (policy, edf) {
        (LbPolicy::Random, _) => Some(rng.below(len as u64) as usize),
        (_, Some(edf)) => edf.pick(),
        (LbPolicy::RoundRobin, None) => {
            let cursor = match source {
                Source::Healthy => &mut level.rr_healthy,
                Source::All => &mut level.rr_all,
            };
            let pos = (*cursor % len as u64) as usize;
            *cursor = cursor.wrapping_add(1);
            Some(pos)
        }
        (LbPolicy::LeastRequest, None) => {
            // Two random choices, keep the one with fewer active requests
            // (Envoy `LeastRequestLoadBalancer::unweightedHostPick`).
            let hosts = level.hosts(source);
            let a = rng.below(len as u64) as usize;
            let b = rng.below(len as u64) as usize;
            let load = |pos: usize| {
                hosts
                    .get(pos)
                    .and_then(|h| active.get(*h))
                    .copied()
                    .unwrap_or(0)
            };
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// Envoy's `recalculatePerPriorityState` + `recalculatePerPriorityPanic`.
fn compute_loads(levels: &[Level], panic_threshold: u32) -> LoadView {
    let n = levels.len();
    let health: Vec<u32> = levels
        .iter()
        .map(|l| {
            if l.all.is_empty() {
                0
            } else {
                let h = OVERPROVISIONING_FACTOR * l.healthy.len() as u64 / l.all.len() as u64;
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
            let healthy_percent = if level.all.is_empty() {
                0
            } else {
                100 * level.healthy.len() as u64 / level.all.len() as u64
            };
            healthy_percent < u64::from(panic_threshold)
        };
        if let Some(slot) = panic.get_mut(p) {
            *slot = in_panic;
        }
    }
    if panic.iter().all(|p| *p) {
        // Every priority in panic: spread load by host counts.
        let counts: Vec<u32> = levels.iter().map(|l| l.all.len() as u32).collect();
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

/// Earliest-deadline-first scheduler, as Envoy's `EdfScheduler`: each host
/// is due every `1/weight`; ties go to the earlier insertion.
#[derive(Debug)]
struct Edf {
    heap: BinaryHeap<Reverse<EdfEntry>>,
    weights: Vec<f64>,
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
    fn new(hosts: &[usize], weights: &[u32], rng: &mut Rng) -> Self {
        let weights: Vec<f64> = hosts
            .iter()
            .map(|h| f64::from(weights.get(*h).copied().unwrap_or(1).max(1)))
            .collect();
        let heap = weights
            .iter()
            .enumerate()
            .map(|(position, w)| {
                Reverse(EdfEntry {
                    deadline: 1.0 / w,
                    order: position as u64,
                    position,
                })
            })
            .collect();
        let mut edf = Edf { heap, weights };
        // Envoy starts each scheduler after a random number of picks so that
        // workers do not all begin with the same host.
        let warmup = rng.below(edf.weights.len() as u64);
        for _ in 0..warmup {
            edf.pick();
        }
        edf
    }

    fn pick(&mut self) -> Option<usize> {
        let Reverse(mut top) = self.heap.pop()?;
        let w = self.weights.get(top.position).copied().unwrap_or(1.0);
        let position = top.position;
        top.deadline += 1.0 / w;
        top.order = top.order.wrapping_add(self.weights.len() as u64);
        self.heap.push(Reverse(top));
        Some(position)
    }
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
