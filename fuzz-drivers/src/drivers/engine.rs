//! `engine`: the failover engine driven by a sequence of operations —
//! inventory changes, outcomes recorded through the outlier detector on a
//! [`MemoryStore`], clock moves and interval sweeps, ejection-table
//! updates, reconfigurations and decisions — with the engine's invariants
//! checked after every step. A broken invariant panics (that is how
//! libFuzzer reports it).

use locality_failover::balancer::Pick;
use locality_failover::config::istio::{OutlierDetection, TrafficPolicy};
use locality_failover::config::{OutlierConfig, PluginConfig, Policy, RankingRule};
use locality_failover::detector::{self, ClusterView, MemoryStore};
use locality_failover::engine::{Decision, Engine};
use locality_failover::inventory::{EndpointSpec, Inventory, Labels};
use locality_failover::outlier::{nanos, EjectionTable, Outcome};

use crate::gen;
use crate::input::Input;

/// How often the interesting states were reached (for the reach test).
pub mod stats {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static EJECTIONS: AtomicU64 = AtomicU64::new(0);
    pub static RETURNS: AtomicU64 = AtomicU64::new(0);
    pub static PANIC_PICKS: AtomicU64 = AtomicU64::new(0);
    pub static FAILOVER_PICKS: AtomicU64 = AtomicU64::new(0);
    pub static REFUSED_INVENTORIES: AtomicU64 = AtomicU64::new(0);
    pub static NONE_DECISIONS: AtomicU64 = AtomicU64::new(0);

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Operations per input; keeps one execution short.
pub const MAX_STEPS: usize = 256;

/// Start of the simulated clock.
const STARTS: &[u64] = &[
    1_700_000_000_000_000_000,
    1_700_000_000_000_000_000,
    0,
    1,
    u64::MAX - 1_000_000_000_000,
    u64::MAX,
];

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let policy = policy(&mut inp);
    let client = gen::labels(&mut inp);
    let seed = inp.u64();
    let specs = gen::endpoints(&mut inp);
    let inventory = load(&specs).unwrap_or_else(default_inventory);
    let now = inp.pick(STARTS);
    let mut run = Run {
        engine: Engine::new(policy.clone(), client.clone(), inventory, seed),
        policy,
        client,
        seed,
        store: MemoryStore::default(),
        now,
        configured_at: now,
    };
    if let Some(cfg) = run.policy.outlier.clone() {
        if let Err(e) = detector::arm(&mut run.store, &cfg, run.now, run.configured_at) {
            panic!("MemoryStore::update_table failed: {e}");
        }
    }
    run.check_view();
    for _ in 0..MAX_STEPS {
        if inp.is_empty() {
            break;
        }
        run.step(&mut inp);
        run.check_view();
    }
}

/// A policy from arbitrary DestinationRule / traffic-distribution choices;
/// a refused one falls back to Istio's mesh default with outlier detection.
pub fn policy(inp: &mut Input) -> Policy {
    let mut raw = PluginConfig::default();
    gen::traffic(inp, &mut raw);
    match Policy::from_config(&raw) {
        Ok(p) => p,
        Err(_) => fallback_policy(inp.pick(&[10, 34, 50, 100])),
    }
}

fn fallback_policy(max_ejection_percent: i32) -> Policy {
    let raw = PluginConfig {
        traffic_policy: Some(TrafficPolicy {
            load_balancer: None,
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx_errors: Some(2),
                max_ejection_percent: Some(max_ejection_percent),
                base_ejection_time: Some("30s".into()),
                interval: Some("1s".into()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    match Policy::from_config(&raw) {
        Ok(p) => p,
        Err(e) => panic!("the fallback policy is refused: {e}"),
    }
}

fn default_inventory() -> Inventory {
    let specs: Vec<EndpointSpec> = (0..4)
        .map(|i| EndpointSpec {
            address: format!("10.0.0.{i}:80"),
            labels: [(
                locality_failover::config::LABEL_ZONE.to_string(),
                gen::ZONES[i % gen::ZONES.len()].to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .collect();
    match Inventory::from_specs(&specs) {
        Ok(inv) => inv,
        Err(e) => panic!("the default inventory is refused: {e}"),
    }
}

/// Validates `specs` and checks the verdict against an independent
/// statement of the rules: invalid inventories are refused, valid ones
/// accepted and normalised as documented.
pub fn load(specs: &[EndpointSpec]) -> Option<Inventory> {
    let result = Inventory::from_specs(specs);
    let want = gen::expect_valid(specs);
    if result.is_ok() != want {
        panic!(
            "Inventory::from_specs: accepted = {}, expected {want}, for {specs:?}: {result:?}",
            result.is_ok()
        );
    }
    let inv = result.ok()?;
    if inv.len() != specs.len() {
        panic!(
            "inventory of {} endpoints from {} specs",
            inv.len(),
            specs.len()
        );
    }
    for (e, s) in inv.endpoints().iter().zip(specs) {
        if e.weight != s.weight.unwrap_or(1) {
            panic!("weight {} for spec {s:?}", e.weight);
        }
        for (k, v) in &s.labels {
            if e.labels.get(k) != Some(v) {
                panic!("explicit label {k}={v} lost: {e:?} from {s:?}");
            }
        }
        let normal = s
            .address
            .trim()
            .parse::<std::net::SocketAddr>()
            .map(|a| a.to_string());
        if normal.as_deref() != Ok(e.address.as_str()) {
            panic!("address {:?} stored as {:?}", s.address, e.address);
        }
    }
    Some(inv)
}

struct Run {
    engine: Engine,
    policy: Policy,
    client: Labels,
    seed: u64,
    store: MemoryStore,
    now: u64,
    /// When the policy was (re)configured: the origin of the sweep timer.
    configured_at: u64,
}

/// Ejected endpoints of `table` that are in the engine's inventory.
fn ejected_present(table: &EjectionTable, engine: &Engine) -> usize {
    table.active(&|a: &str| engine.contains(a))
}

/// Envoy's cap: a host is ejected only if `100 * (active + 1) / n <= max%`,
/// so never more than `floor(max% * n / 100)` at once.
fn cap(cfg: &OutlierConfig, n: usize) -> usize {
    cfg.max_ejection_percent.min(100) as usize * n / 100
}

fn outcome(inp: &mut Input) -> Outcome {
    match inp.below(10) {
        0 => Outcome::ConnectFailed,
        1 => Outcome::Timeout,
        2 => Outcome::Http(200),
        3 => Outcome::Http(inp.pick(&[500, 502, 503, 504])),
        4 | 5 => Outcome::Http(503),
        6 => Outcome::Http(inp.u16()),
        7 => Outcome::Http(inp.pick(&[0, 404, 499, 599, 600, u16::MAX])),
        _ => Outcome::Http(500),
    }
}

fn time_step(inp: &mut Input) -> u64 {
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    match inp.below(14) {
        0 => 0,
        1 => 1,
        2 => MS,
        3 => 10 * MS,
        4 => 100 * MS,
        5 => S,
        6 => 10 * S,
        7 => 30 * S,
        8 => 180 * S,
        9 => 300 * S,
        10 => 3600 * S,
        11 => u64::MAX / 2,
        12 => u64::from(inp.u32()) * MS,
        _ => inp.u64(),
    }
}

impl Run {
    fn step(&mut self, inp: &mut Input) {
        match inp.below(16) {
            0 => self.set_inventory(inp),
            1..=5 => self.record(inp),
            6 | 7 => self.advance(inp),
            8..=11 => self.decide(inp),
            12 => {
                let address = self.address(inp);
                self.engine.end(&address);
            }
            13 => {
                self.engine.apply_table(&self.store.table);
            }
            14 => self.reconfigure(inp),
            _ => {
                // Sweep (or arm) at the current time, without moving the clock.
                if let Some(cfg) = self.policy.outlier.clone() {
                    if inp.bool() {
                        if let Err(e) =
                            detector::arm(&mut self.store, &cfg, self.now, self.configured_at)
                        {
                            panic!("MemoryStore::update_table failed: {e}");
                        }
                    } else {
                        self.sweep(&cfg);
                    }
                }
            }
        }
    }

    /// An inventory address, now and then one that is not there.
    fn address(&self, inp: &mut Input) -> String {
        let inv = self.engine.inventory();
        if inp.ratio(1, 16) {
            return gen::address(inp);
        }
        let i = inp.below(inv.len());
        inv.get(i).map(|e| e.address.clone()).unwrap_or_default()
    }

    fn set_inventory(&mut self, inp: &mut Input) {
        let specs = gen::endpoints(inp);
        let before = self.engine.inventory().clone();
        match load(&specs) {
            Some(inv) => {
                let with_table = inp.bool();
                self.engine
                    .set_inventory(inv, with_table.then_some(&self.store.table));
            }
            None => {
                stats::bump(&stats::REFUSED_INVENTORIES);
                // Refused: nothing changes.
                if self.engine.inventory() != &before {
                    panic!("a refused inventory changed the engine");
                }
            }
        }
    }

    fn record(&mut self, inp: &mut Input) {
        let address = self.address(inp);
        let outcome = outcome(inp);
        let repeat = inp.below(8) + 1;
        let apply = inp.bool();
        let Some(cfg) = self.policy.outlier.clone() else {
            return;
        };
        let n = self.engine.inventory().len();
        for _ in 0..repeat {
            let before = ejected_present(&self.store.table, &self.engine);
            let engine = &self.engine;
            let present = |a: &str| engine.contains(a);
            let view = ClusterView {
                total_hosts: n,
                present: &present,
            };
            let recorded =
                match detector::record(&mut self.store, &cfg, &address, outcome, self.now, &view) {
                    Ok(r) => r,
                    Err(e) => panic!("MemoryStore never fails, got {e}"),
                };
            let after = ejected_present(&self.store.table, &self.engine);
            if after > before {
                // (b) the ejection cap.
                if after > cap(&cfg, n) {
                    panic!(
                        "ejection cap broken: {after} of {n} endpoints ejected with maxEjectionPercent {} (cap {}), after {outcome:?} on {address}",
                        cfg.max_ejection_percent,
                        cap(&cfg, n)
                    );
                }
                if after > before + 1 {
                    panic!("one outcome ejected {} endpoints", after - before);
                }
            }
            if recorded.ejected() {
                stats::bump(&stats::EJECTIONS);
            }
            if recorded.ejected() && !self.store.table.is_ejected(&address) {
                panic!("record() says {address} was ejected but the table disagrees");
            }
        }
        if apply {
            self.engine.apply_table(&self.store.table);
        }
    }

    fn advance(&mut self, inp: &mut Input) {
        let dt = time_step(inp);
        self.now = if inp.ratio(1, 16) {
            // Wall clocks can step back.
            self.now.saturating_sub(dt)
        } else {
            self.now.saturating_add(dt)
        };
        let apply = inp.ratio(3, 4);
        if let Some(cfg) = self.policy.outlier.clone() {
            self.sweep(&cfg);
        }
        if apply {
            self.engine.apply_table(&self.store.table);
        }
    }

    fn sweep(&mut self, cfg: &OutlierConfig) {
        let before = self.store.table.clone();
        let engine = &self.engine;
        let present = |a: &str| engine.contains(a);
        let back = match detector::sweep_if_due(&mut self.store, cfg, self.now, &present) {
            Ok(b) => b,
            Err(e) => panic!("MemoryStore never fails, got {e}"),
        };
        let table = &self.store.table;
        let Some(back) = back else {
            if before.sweep_due(self.now) {
                panic!("a due sweep did not run at {}", self.now);
            }
            if table != &before {
                panic!("a sweep that was not due changed the table");
            }
            return;
        };
        for a in &back {
            stats::bump(&stats::RETURNS);
            if !before.is_ejected(a) || table.is_ejected(a) {
                panic!("sweep returned {a}, which was not ejected or still is");
            }
        }
        if table.next_sweep != self.now.saturating_add(nanos(cfg.interval)) {
            panic!("sweep at {} re-armed for {}", self.now, table.next_sweep);
        }
        let base = nanos(cfg.base_ejection_time);
        let max = nanos(cfg.max_ejection_time);
        for (a, h) in &table.hosts {
            if !self.engine.contains(a) {
                panic!("sweep kept {a}, which is not in the inventory");
            }
            if h.ejected {
                let due = base.saturating_mul(u64::from(h.backoff)).min(max);
                if self.now.saturating_sub(h.ejected_at) >= due {
                    panic!("{a} still ejected after its time: {h:?}, now {}", self.now);
                }
                if h.backoff == 0 {
                    panic!("{a} ejected with backoff 0: {h:?}");
                }
            }
        }
    }

    fn reconfigure(&mut self, inp: &mut Input) {
        let policy = policy(inp);
        let apply = inp.bool();
        let inventory = self.engine.inventory().clone();
        self.engine = Engine::new(policy.clone(), self.client.clone(), inventory, self.seed);
        self.policy = policy;
        self.configured_at = self.now;
        if apply {
            self.engine.apply_table(&self.store.table);
        }
    }

    fn decide(&mut self, inp: &mut Input) {
        let max_hosts = inp.below(18);
        let begin = inp.bool();
        let decision = self.engine.decide(max_hosts);
        self.check_decision(decision.as_ref(), max_hosts);
        if let (Some(d), true) = (&decision, begin) {
            self.engine.begin(d.pick.endpoint);
        }
    }

    /// (a), (c), (d): what one decision may be.
    fn check_decision(&self, decision: Option<&Decision>, max_hosts: usize) {
        let engine = &self.engine;
        let n = engine.inventory().len();
        let ranking = engine.ranking();
        let Some(d) = decision else {
            stats::bump(&stats::NONE_DECISIONS);
            let ranked = ranking.priority.iter().any(Option::is_some);
            let any_ejected = (0..n).any(|i| engine.is_unhealthy(i));
            if ranked && !any_ejected {
                panic!(
                    "decide() found nothing though every endpoint is healthy; ranking {ranking:?}"
                );
            }
            return;
        };
        let pick = d.pick;
        if pick.panic {
            stats::bump(&stats::PANIC_PICKS);
        }
        if pick.priority > 0 {
            stats::bump(&stats::FAILOVER_PICKS);
        }
        self.check_pick(pick);
        if pick.panic {
            self.check_panic_pick(pick);
        }
        self.check_hosts(d, max_hosts);
    }

    /// The pick: (a) an index of the current inventory at its ranked
    /// priority; (c) outside panic mode never an ejected endpoint.
    fn check_pick(&self, pick: Pick) {
        let engine = &self.engine;
        let n = engine.inventory().len();
        let ranking = engine.ranking();
        // (a) the pick is an index of the current inventory.
        if pick.endpoint >= n {
            panic!("pick {} outside an inventory of {n}", pick.endpoint);
        }
        if ranking.priority.get(pick.endpoint).copied().flatten() != Some(pick.priority) {
            panic!(
                "pick {} reported at priority {} but ranked {:?}",
                pick.endpoint,
                pick.priority,
                ranking.priority.get(pick.endpoint)
            );
        }
        // (c) outside panic mode an ejected endpoint is never picked.
        if !pick.panic && engine.is_unhealthy(pick.endpoint) {
            panic!(
                "non-panic pick of ejected endpoint {} ({:?}) at priority {}; load {:?}",
                pick.endpoint,
                engine.endpoint(pick.endpoint).map(|e| &e.address),
                pick.priority,
                engine.load_view()
            );
        }
        if !pick.panic && engine.table_generation() == Some(self.store.table.generation) {
            let address = engine
                .endpoint(pick.endpoint)
                .map(|e| e.address.clone())
                .unwrap_or_default();
            if self.store.table.is_ejected(&address) {
                panic!("non-panic pick of {address}, ejected in the current table");
            }
        }
    }

    /// A panic-mode pick: its priority is below the panic threshold.
    fn check_panic_pick(&self, pick: Pick) {
        let engine = &self.engine;
        let threshold = engine.policy().panic_threshold;
        if threshold == 0 {
            panic!("panic-mode pick with a panic threshold of 0");
        }
        let members = engine.ranking().members();
        let level = members
            .get(pick.priority as usize)
            .cloned()
            .unwrap_or_default();
        let healthy = level.iter().filter(|i| !engine.is_unhealthy(**i)).count();
        if !level.is_empty() && 100 * healthy / level.len() >= threshold as usize {
            panic!(
                "priority {} in panic with {healthy}/{} healthy and threshold {threshold}%",
                pick.priority,
                level.len()
            );
        }
    }

    /// (d) The host list: the pick first, at most `max_hosts`, no repeats,
    /// only ranked hosts, priorities never going back, and no ejected host
    /// for retries outside the pick's panicking priority.
    fn check_hosts(&self, d: &Decision, max_hosts: usize) {
        let engine = &self.engine;
        let n = engine.inventory().len();
        let ranking = engine.ranking();
        let pick = d.pick;
        if d.hosts.first() != Some(&pick.endpoint) {
            panic!(
                "hosts {:?} do not start with the pick {}",
                d.hosts, pick.endpoint
            );
        }
        if d.hosts.len() > max_hosts.max(1) {
            panic!("{} hosts for max_hosts {max_hosts}", d.hosts.len());
        }
        let mut seen = std::collections::HashSet::new();
        let mut last_priority = pick.priority;
        for h in &d.hosts {
            if *h >= n {
                panic!("host {h} outside an inventory of {n}: {:?}", d.hosts);
            }
            if !seen.insert(*h) {
                panic!("duplicate host {h} in {:?}", d.hosts);
            }
            let Some(p) = ranking.priority.get(*h).copied().flatten() else {
                panic!(
                    "host {h} receives no traffic (unranked) but is listed: {:?}",
                    d.hosts
                );
            };
            if p < last_priority {
                panic!(
                    "hosts go back from priority {last_priority} to {p}: {:?}",
                    d.hosts
                );
            }
            last_priority = p;
            if (p != pick.priority || !pick.panic) && engine.is_unhealthy(*h) {
                panic!(
                    "ejected host {h} (priority {p}) listed for retries: {:?}, pick {pick:?}",
                    d.hosts
                );
            }
        }
    }

    /// The engine's view of the table, its ranking and its loads.
    fn check_view(&self) {
        let engine = &self.engine;
        let inv = engine.inventory();
        let n = inv.len();
        if engine.table_generation() == Some(self.store.table.generation) {
            for (i, e) in inv.endpoints().iter().enumerate() {
                if engine.is_unhealthy(i) != self.store.table.is_ejected(&e.address) {
                    panic!(
                        "engine view of {} ({}) differs from table generation {}",
                        e.address,
                        engine.is_unhealthy(i),
                        self.store.table.generation
                    );
                }
            }
        }
        let ranking = engine.ranking();
        if ranking.priority.len() != n || ranking.weight.len() != n {
            panic!(
                "ranking of {} / {} entries for {n} endpoints",
                ranking.priority.len(),
                ranking.weight.len()
            );
        }
        if ranking
            .priority
            .iter()
            .flatten()
            .any(|p| *p >= ranking.levels)
        {
            panic!(
                "priority beyond {} levels: {:?}",
                ranking.levels, ranking.priority
            );
        }
        if !matches!(engine.policy().ranking, RankingRule::Distribute(_)) {
            if ranking.priority.iter().any(Option::is_none) {
                panic!(
                    "unranked endpoint without `distribute`: {:?}",
                    ranking.priority
                );
            }
            if ranking.members().iter().any(Vec::is_empty) {
                panic!("empty priority (gap) in {:?}", ranking.priority);
            }
        }
        let view = engine.load_view();
        let levels = ranking.levels as usize;
        if view.load.len() != levels || view.panic.len() != levels || view.health.len() != levels {
            panic!("load view {view:?} for {levels} priorities");
        }
        let total: u64 = view.load.iter().map(|l| u64::from(*l)).sum();
        if levels > 0 && total != 100 {
            panic!("priority loads add up to {total}: {view:?}");
        }
    }
}
