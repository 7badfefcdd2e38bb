//! `bench_engine`: the measurements behind `BENCHMARKS.md` (run them all
//! with `make bench`, which calls `scripts/bench.sh`).
//!
//! ```text
//! bench_engine engine           2. ns per Engine::decide, 10..10,000 endpoints
//! bench_engine failure          3. ejection and inventory/config change, 10,000 endpoints
//! bench_engine memory           4. native peak heap of one FilterRoot, 10,000 endpoints
//! bench_engine calls            5. host calls per request (simulated host's CallCounts)
//! bench_engine envoy            1. Envoy CPU/request and latency: native, no-op wasm, this filter
//! bench_engine envoy-memory     4. wasm linear memory and RSS in a real Envoy, 10 vs 10,000 endpoints
//! bench_engine serve N          the upstream: N loopback HTTP/1.1 listeners (a separate process)
//! ```
//!
//! Every result is printed on stdout as one tab-separated line
//! `ROW <bench> <what> <measured> <target> <verdict>`; progress goes to
//! stderr. `scripts/bench.sh` turns the rows into the table.
//!
//! The binary installs a counting global allocator. Counting is off unless
//! a benchmark turns it on, so timings are not taxed by it; while the
//! simulated host works on its own data (shared data, properties) the
//! allocations are not charged to the filter (see [`host_side`]).

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use host_harness::envoy::{
    Endpoint as EnvoyEndpoint, EnvoyOptions, EnvoyProcess, FilterModeConfig, Layout,
    LbPolicy as EnvoyLb, NativeModeConfig, Node, OutlierDetection, Steering, WasmFilter,
};
use host_harness::sim::{lock, Behavior, RouterSteering, SimEnvoy};
use locality_failover::config::{Settings, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use locality_failover::detector::{self, ClusterView, MemoryStore};
use locality_failover::engine::Engine;
use locality_failover::filter::{FilterRoot, RequestState};
use locality_failover::host::{Host, HostError, LogLevel, MetricKind};
use locality_failover::inventory::{EndpointSpec, Inventory, Labels};
use locality_failover::outlier::Outcome;
use locality_failover::ranking::rank;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Counting allocator.

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HOST_SIDE: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn counted() -> bool {
    COUNTING.load(Ordering::Relaxed) && !HOST_SIDE.load(Ordering::Relaxed)
}

fn grow(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(by: usize) {
    // Memory allocated before counting started may be freed while counting:
    // never wrap below zero.
    let _ = LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
        Some(l.saturating_sub(by))
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(layout.size());
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            grow(layout.size());
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        if counted() {
            shrink(layout.size());
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocation counters over one region of code.
#[derive(Clone, Copy, Debug, Default)]
struct AllocStats {
    allocs: u64,
    /// Highest live bytes above the level at the start of the region.
    peak_bytes: usize,
    /// Live bytes at the end minus live bytes at the start.
    retained_bytes: isize,
}

/// Runs `f` with allocation counting on.
fn count_allocs<T>(f: impl FnOnce() -> T) -> (T, AllocStats) {
    let start_live = LIVE.load(Ordering::Relaxed);
    PEAK.store(start_live, Ordering::Relaxed);
    let start_allocs = ALLOCS.load(Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    let end_live = LIVE.load(Ordering::Relaxed);
    let stats = AllocStats {
        allocs: ALLOCS.load(Ordering::Relaxed) - start_allocs,
        peak_bytes: PEAK.load(Ordering::Relaxed).saturating_sub(start_live),
        retained_bytes: end_live as isize - start_live as isize,
    };
    (out, stats)
}

/// While alive, allocations are the simulated host's own (not charged).
struct HostSide(bool);

fn host_side() -> HostSide {
    HostSide(HOST_SIDE.swap(true, Ordering::SeqCst))
}

impl Drop for HostSide {
    fn drop(&mut self) {
        HOST_SIDE.store(self.0, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Output.

fn row(bench: &str, what: &str, measured: &str, target: &str, verdict: &str) {
    println!("ROW\t{bench}\t{what}\t{measured}\t{target}\t{verdict}");
    let _ = std::io::stdout().flush();
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

fn human_bytes(b: f64) -> String {
    if b < 0.0 {
        return format!("-{}", human_bytes(-b));
    }
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------
// The guide's setup: labels, DestinationRule, inventories.

const NET1: &str = "cluster1-network";
const REGIONS: [(&str, &str); 3] = [
    ("us-east-1", "cluster1-network"),
    ("us-west-2", "cluster2-network"),
    ("eu-west-1", "cluster3-network"),
];
const ZONES: [&str; 3] = ["a", "b", "c"];

fn client_labels() -> Labels {
    [
        (LABEL_NETWORK, NET1),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The guide's step-6 DestinationRule `trafficPolicy`, with the
/// failoverPriority order the README recommends ([network, region, zone]:
/// P0 same zone, P1 same region, P2 other networks/regions).
fn traffic_policy(lb: &str) -> Value {
    json!({
        "loadBalancer": {
            "simple": lb,
            "localityLbSetting": {
                "enabled": true,
                "failoverPriority": [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]
            }
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5,
            "interval": "10s",
            "baseEjectionTime": "3m",
            "maxEjectionPercent": 50
        }
    })
}

fn plugin_config(lb: &str) -> Value {
    json!({
        "trafficPolicy": traffic_policy(lb),
        "inventory": { "source": "clusterMetadata", "namespace": "locality-failover" },
        "steering": { "mode": "override-host", "header": "x-locality-failover-hosts", "maxHosts": 3 }
    })
}

/// Labels of endpoint `i` of a synthetic inventory: 3 regions x 3 zones,
/// endpoints dealt round-robin over the 9 localities.
fn synthetic_labels(i: usize) -> BTreeMap<String, String> {
    let (region, network) = REGIONS[(i / ZONES.len()) % REGIONS.len()];
    let zone = format!("{region}{}", ZONES[i % ZONES.len()]);
    [
        (LABEL_NETWORK.to_string(), network.to_string()),
        (LABEL_REGION.to_string(), region.to_string()),
        (LABEL_ZONE.to_string(), zone),
    ]
    .into_iter()
    .collect()
}

fn synthetic_address(i: usize) -> String {
    format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn synthetic_specs(n: usize) -> Vec<EndpointSpec> {
    (0..n)
        .map(|i| EndpointSpec {
            address: synthetic_address(i),
            name: Some(format!("ep-{i}")),
            labels: synthetic_labels(i),
            weight: Some(1),
            ..Default::default()
        })
        .collect()
}

fn synthetic_inventory(n: usize) -> Inventory {
    Inventory::from_specs(&synthetic_specs(n)).unwrap_or_default()
}

fn inventory_json(specs: &[EndpointSpec], revision: &str) -> Value {
    json!({ "revision": revision, "endpoints": specs })
}

fn settings(lb: &str) -> Settings {
    match Settings::from_bytes(plugin_config(lb).to_string().as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: configuration refused: {e}");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Engine pick cost.

fn bench_engine() {
    const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
    // Many short runs, sizes interleaved, minimum kept: on a shared machine
    // the minimum is the run nobody else disturbed.
    const ROUNDS: usize = 150;
    const ITERS: u32 = 20_000;
    for lb in ["ROUND_ROBIN", "LEAST_REQUEST"] {
        let policy = settings(lb).policy;
        let mut engines: Vec<Engine> = SIZES
            .iter()
            .map(|n| Engine::new(policy.clone(), client_labels(), synthetic_inventory(*n), 7))
            .collect();
        // Warm up (caches, branch predictors, allocator).
        for engine in &mut engines {
            for _ in 0..ITERS {
                black_box(engine.decide(black_box(3)));
            }
        }
        let mut best = [f64::INFINITY; SIZES.len()];
        for _ in 0..ROUNDS {
            for (engine, b) in engines.iter_mut().zip(best.iter_mut()) {
                let t = Instant::now();
                for _ in 0..ITERS {
                    black_box(engine.decide(black_box(3)));
                }
                *b = b.min(t.elapsed().as_nanos() as f64 / f64::from(ITERS));
            }
        }
        let mut allocs = 0.0;
        for (engine, (n, ns)) in engines.iter_mut().zip(SIZES.iter().zip(best)) {
            let ((), a) = count_allocs(|| {
                for _ in 0..1000 {
                    black_box(engine.decide(black_box(3)));
                }
            });
            allocs = a.allocs as f64 / 1000.0;
            progress(&format!(
                "engine {lb} n={n}: {ns:.1} ns/decide, {allocs:.1} allocs/decide"
            ));
        }
        let per = SIZES
            .iter()
            .zip(best)
            .map(|(n, ns)| format!("{n}: {ns:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        row("2", &format!("Engine::decide ns, {lb} (n: ns, min of {ROUNDS} x {ITERS}; {allocs:.0} alloc/decide)"), &per, "", "");
        let small = best[0];
        let large = best[SIZES.len() - 1];
        let ratio = large / small;
        row(
            "2",
            &format!("decide cost 10,000 / 10, {lb}"),
            &format!("{ratio:.2}x"),
            "<= 1.5x",
            verdict(ratio <= 1.5),
        );
        row(
            "2",
            &format!("decide cost at 10,000, {lb}"),
            &format!("{large:.0} ns"),
            "< 200 ns",
            verdict(large < 200.0),
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Failure path.

fn bench_failure() {
    const N: usize = 10_000;
    let settings = settings("ROUND_ROBIN");
    let policy = settings.policy.clone();
    let Some(outlier) = policy.outlier.clone() else {
        eprintln!("bench: no outlier configuration");
        return;
    };
    let inventory = synthetic_inventory(N);
    let mut engine = Engine::new(policy.clone(), client_labels(), inventory.clone(), 7);
    let mut store = MemoryStore::default();
    let now = 1_700_000_000_000_000_000u64;

    // Ejection: four failures arm the streak, the fifth (timed) ejects;
    // then the engine takes the new table (timed).
    let mut record_ns = Vec::new();
    let mut apply_ns = Vec::new();
    let mut total_ns = Vec::new();
    let mut allocs = Vec::new();
    let mut ejected = 0;
    for k in 0..40 {
        // Endpoints of priority 0 (index multiple of 9: us-east-1a).
        let address = synthetic_address(k * 9);
        let present = |a: &str| engine.contains(a);
        let view = ClusterView {
            total_hosts: N,
            present: &present,
        };
        for _ in 0..4 {
            let _ = detector::record(
                &mut store,
                &outlier,
                &address,
                Outcome::Http(503),
                now,
                &view,
            );
        }
        let ((r, t_record), stats1) = count_allocs(|| {
            let t = Instant::now();
            let r = detector::record(
                &mut store,
                &outlier,
                &address,
                Outcome::Http(503),
                now,
                &view,
            );
            (r, t.elapsed())
        });
        if r.as_ref().is_ok_and(|r| r.ejected()) {
            ejected += 1;
        }
        let table = store.table.clone();
        let ((_, t_apply), stats2) = count_allocs(|| {
            let t = Instant::now();
            let changed = engine.apply_table(&table);
            (changed, t.elapsed())
        });
        record_ns.push(t_record.as_nanos() as f64);
        apply_ns.push(t_apply.as_nanos() as f64);
        total_ns.push((t_record + t_apply).as_nanos() as f64);
        allocs.push((stats1.allocs + stats2.allocs) as f64);
    }
    let ok = ejected == 40;
    let rec = median(&mut record_ns);
    let app = median(&mut apply_ns);
    let tot = median(&mut total_ns);
    let al = median(&mut allocs);
    progress(&format!(
        "ejection: record {rec:.0} ns, apply_table {app:.0} ns, {al} allocs ({ejected}/40 ejected)"
    ));
    row(
        "3",
        "ejection, 10,000 endpoints: detector::record (5th 5xx, MemoryStore) + Engine::apply_table",
        &format!(
            "{} ({} + {}), {al:.0} allocations",
            human_ns(tot),
            human_ns(rec),
            human_ns(app)
        ),
        "",
        if ok { "" } else { "ejection did not happen" },
    );

    // Inventory change: Engine::set_inventory with a new 10,000-endpoint list.
    let mut times = Vec::new();
    let mut stats = AllocStats::default();
    for _ in 0..7 {
        let next = inventory.clone();
        let (d, s) = count_allocs(|| {
            let t = Instant::now();
            engine.set_inventory(next, None);
            t.elapsed()
        });
        times.push(d.as_nanos() as f64);
        stats = s;
    }
    let t = median(&mut times);
    progress(&format!(
        "set_inventory: {t:.0} ns, {} allocs",
        stats.allocs
    ));
    row(
        "3",
        "inventory change, 10,000 endpoints: Engine::set_inventory (re-rank + rebuild)",
        &format!("{}, {} allocations", human_ns(t), stats.allocs),
        "",
        "",
    );

    // Configuration change: Settings::from_bytes + ranking of 10,000.
    let bytes = plugin_config("ROUND_ROBIN").to_string().into_bytes();
    let client = client_labels();
    let mut times = Vec::new();
    let mut stats = AllocStats::default();
    for _ in 0..7 {
        let (d, s) = count_allocs(|| {
            let t = Instant::now();
            if let Ok(s) = Settings::from_bytes(&bytes) {
                black_box(rank(&s.policy.ranking, &client, &inventory));
            }
            t.elapsed()
        });
        times.push(d.as_nanos() as f64);
        stats = s;
    }
    let t = median(&mut times);
    row(
        "3",
        "config change, 10,000 endpoints: Settings::from_bytes + rank",
        &format!("{}, {} allocations", human_ns(t), stats.allocs),
        "",
        "",
    );

    // The whole path in the filter: a new revision in the cluster metadata,
    // seen by the next request (decode protobuf, validate, rank, rebuild,
    // create streak keys, re-read the ejection table).
    let (mut host, mut root) = filter_with_inventory(N, &settings);
    let mut times = Vec::new();
    let mut stats = AllocStats::default();
    for rev in 2..6 {
        host.publish_inventory(N, &format!("{rev}"), rev);
        let (d, s) = count_allocs(|| {
            let t = Instant::now();
            let state = root.on_request_headers(&mut host);
            let d = t.elapsed();
            if let Some(mut state) = state {
                let first = served(&root, &state);
                host.answer(200, first.as_deref());
                root.on_response_headers(&host, &mut state);
                root.on_log(&mut host, &state);
            }
            d
        });
        times.push(d.as_nanos() as f64);
        stats = s;
    }
    let t = median(&mut times);
    row(
        "3",
        "inventory change in the filter, 10,000 endpoints: first request after a new revision (metadata decode .. rebuild)",
        &format!("{}, {} allocations", human_ns(t), stats.allocs),
        "",
        "",
    );
}

// ---------------------------------------------------------------------------
// A host for FilterRoot whose own storage is not charged to the filter.

struct BenchHost {
    props: HashMap<String, Vec<u8>>,
    shared: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    config: Vec<u8>,
    now: Cell<u64>,
    headers: HashMap<String, String>,
    response: HashMap<String, String>,
    metrics: Vec<(String, i64)>,
}

fn key(path: &[&str]) -> String {
    path.join("\0")
}

impl BenchHost {
    fn new(config: Vec<u8>) -> BenchHost {
        let _h = host_side();
        let mut props = HashMap::new();
        for (k, v) in client_labels() {
            props.insert(
                key(&["xds", "node", "metadata", "LABELS", &k]),
                v.clone().into_bytes(),
            );
        }
        props.insert(
            key(&["xds", "node", "locality", "region"]),
            b"us-east-1".to_vec(),
        );
        props.insert(
            key(&["xds", "node", "locality", "zone"]),
            b"us-east-1a".to_vec(),
        );
        props.insert(key(&["xds", "cluster_name"]), b"svc".to_vec());
        BenchHost {
            props,
            shared: HashMap::new(),
            next_cas: 0,
            config,
            now: Cell::new(1_700_000_000_000_000_000),
            headers: HashMap::new(),
            response: HashMap::new(),
            metrics: Vec::new(),
        }
    }

    /// Puts an inventory of `n` synthetic endpoints in the cluster metadata
    /// (weights differ by `salt`, so each revision is a real change).
    fn publish_inventory(&mut self, n: usize, revision: &str, salt: usize) {
        let _h = host_side();
        let mut specs = synthetic_specs(n);
        if let Some(s) = specs.get_mut(salt % n.max(1)) {
            s.weight = Some(1 + (salt % 3) as u32);
        }
        let bytes = locality_failover::metadata::metadata_for(
            "locality-failover",
            &inventory_json(&specs, revision),
        );
        self.props.insert(key(&["xds", "cluster_metadata"]), bytes);
        self.props.insert(
            key(&[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                "locality-failover",
                "revision",
            ]),
            revision.as_bytes().to_vec(),
        );
    }

    /// The properties `on_log` reads, as Envoy sets them for an answer.
    fn answer(&mut self, code: i64, upstream: Option<&str>) {
        let _h = host_side();
        self.props
            .insert(key(&["response", "code"]), code.to_le_bytes().to_vec());
        self.response.insert(":status".into(), code.to_string());
        self.props
            .insert(key(&["response", "flags"]), 0u64.to_le_bytes().to_vec());
        if let Some(u) = upstream {
            self.props
                .insert(key(&["upstream", "address"]), u.as_bytes().to_vec());
        }
        self.props.insert(
            key(&["upstream", "request_attempt_count"]),
            1u64.to_le_bytes().to_vec(),
        );
        self.now.set(self.now.get() + 100_000);
    }
}

impl Host for BenchHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let found = {
            let _h = host_side();
            self.props.get(&key(path))
        };
        // Envoy copies a property into the VM's memory: charged to the filter.
        Ok(found.cloned())
    }
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let found = {
            let _h = host_side();
            self.response.get(name)
        };
        Ok(found.map(|v| v.as_bytes().to_vec()))
    }
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        let found = {
            let _h = host_side();
            self.headers.get(name)
        };
        Ok(found.cloned())
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        let _h = host_side();
        match value {
            Some(v) => self.headers.insert(name.to_string(), v.to_string()),
            None => self.headers.remove(name),
        };
        Ok(())
    }
    fn send_local_reply(&mut self, _status: u32, _body: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        let found = {
            let _h = host_side();
            self.shared.get(key)
        };
        Ok(match found {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), HostError> {
        let _h = host_side();
        if let (Some(c), Some((_, current))) = (cas, self.shared.get(key)) {
            if c != *current {
                return Err(HostError::CasMismatch);
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.shared
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
    fn now_nanos(&self) -> u64 {
        self.now.get()
    }
    fn set_tick_period(&mut self, _period: Duration) -> Result<(), HostError> {
        Ok(())
    }
    fn define_metric(&mut self, _kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let _h = host_side();
        self.metrics.push((name.to_string(), 0));
        Ok((self.metrics.len() - 1) as u32)
    }
    fn increment_metric(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        if let Some(m) = self.metrics.get_mut(id as usize) {
            m.1 += by;
        }
        Ok(())
    }
    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        if let Some(m) = self.metrics.get_mut(id as usize) {
            m.1 = value as i64;
        }
        Ok(())
    }
    fn log(&self, level: LogLevel, message: &str) {
        if level >= LogLevel::Warn {
            let _h = host_side();
            eprintln!("bench: filter log: {message}");
        }
    }
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(self.config.clone()))
    }
}

/// The address a request was steered to first (the simulated host's work:
/// not charged to the filter).
fn served(root: &FilterRoot, state: &RequestState) -> Option<String> {
    let _h = host_side();
    root.request_addresses(state).into_iter().next()
}

/// A configured FilterRoot whose inventory (`n` endpoints, revision "1") is loaded.
fn filter_with_inventory(n: usize, settings: &Settings) -> (BenchHost, FilterRoot) {
    let _ = settings;
    let mut host = BenchHost::new(plugin_config("ROUND_ROBIN").to_string().into_bytes());
    host.publish_inventory(n, "1", 0);
    let mut root = FilterRoot::new(7);
    root.on_configure(&mut host);
    if let Some(mut state) = root.on_request_headers(&mut host) {
        let first = served(&root, &state);
        host.answer(200, first.as_deref());
        root.on_response_headers(&host, &mut state);
        root.on_log(&mut host, &state);
    }
    (host, root)
}

// ---------------------------------------------------------------------------
// 4. Native memory of one VM's FilterRoot.

fn bench_memory(wasm: &Path) {
    const N: usize = 10_000;
    let mut host = BenchHost::new(plugin_config("ROUND_ROBIN").to_string().into_bytes());
    host.publish_inventory(N, "1", 0);
    let ((root, after_load), stats) = count_allocs(|| {
        let mut root = FilterRoot::new(7);
        root.on_configure(&mut host);
        let mut after_load = 0isize;
        for i in 0..1000 {
            if let Some(mut state) = root.on_request_headers(&mut host) {
                let first = served(&root, &state);
                host.answer(200, first.as_deref());
                root.on_response_headers(&host, &mut state);
                root.on_log(&mut host, &state);
            }
            if i == 0 {
                after_load = LIVE.load(Ordering::Relaxed) as isize;
            }
        }
        (root, after_load)
    });
    let loaded = root.engine("svc").map(|e| e.inventory().len()).unwrap_or(0);
    let _ = after_load;
    progress(&format!(
        "native FilterRoot, {loaded} endpoints: peak {} retained {}",
        stats.peak_bytes, stats.retained_bytes
    ));
    row(
        "4",
        "native heap of one FilterRoot, 10,000 endpoints (64-bit; wasm32 pointers are half): peak / live after 1,000 requests",
        &format!("{} / {}", human_bytes(stats.peak_bytes as f64), human_bytes(stats.retained_bytes as f64)),
        "< 8 MiB",
        verdict(loaded == N && stats.peak_bytes < 8 << 20),
    );
    drop(root);
    match std::fs::metadata(wasm) {
        Ok(m) => {
            let size = m.len() as f64;
            row(
                "4",
                &format!(".wasm size after wasm-opt ({})", wasm.display()),
                &human_bytes(size),
                "< 400 KiB",
                verdict(size < 400.0 * 1024.0),
            );
        }
        Err(e) => row(
            "4",
            ".wasm size after wasm-opt",
            &format!("{}: {e}", wasm.display()),
            "< 400 KiB",
            "MISS",
        ),
    }
}

// ---------------------------------------------------------------------------
// 5. Host calls per request on the hot path.

fn bench_calls() {
    const N: u64 = 10_000;
    let specs: Vec<EndpointSpec> = (0..4)
        .map(|i| {
            let (region, zone) = [
                ("us-east-1", "us-east-1a"),
                ("us-east-1", "us-east-1b"),
                ("us-west-2", "us-west-2a"),
                ("us-west-2", "us-west-2b"),
            ][i];
            let network = if region == "us-east-1" {
                NET1
            } else {
                "cluster2-network"
            };
            EndpointSpec {
                address: format!("10.0.0.{}:8080", i + 1),
                name: Some(format!("ep-{i}")),
                labels: [
                    (LABEL_NETWORK, network),
                    (LABEL_REGION, region),
                    (LABEL_ZONE, zone),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                weight: Some(1),
                ..Default::default()
            }
        })
        .collect();
    let config = plugin_config("ROUND_ROBIN").to_string().into_bytes();
    let mut sim = SimEnvoy::new(
        1,
        &client_labels(),
        config,
        7,
        RouterSteering::OverrideHost {
            header: "x-locality-failover-hosts".into(),
            prefix: String::new(),
        },
    );
    let metadata = locality_failover::metadata::metadata_for(
        "locality-failover",
        &inventory_json(&specs, "1"),
    );
    sim.set_cluster(
        "svc",
        metadata,
        specs.iter().map(|s| s.address.clone()).collect(),
    );
    sim.set_property(
        &[
            "xds",
            "cluster_metadata",
            "filter_metadata",
            "locality-failover",
            "revision",
        ],
        Some(b"1".to_vec()),
    );
    for s in &specs {
        sim.upstreams.insert(s.address.clone(), Behavior::Healthy);
    }
    sim.request_spacing = Duration::from_micros(10);
    if !sim.configure() {
        row(
            "5",
            "host calls per request",
            "configuration refused",
            "",
            "MISS",
        );
        return;
    }
    // The first request loads the inventory; not the hot path.
    let _ = sim.request(&[]);
    let before = lock(&sim.shared).calls;
    let mut ok = 0u64;
    for _ in 0..N {
        if sim.request(&[]).status == 200 {
            ok += 1;
        }
    }
    let after = lock(&sim.shared).calls;
    let per = |a: u64, b: u64| (a - b) as f64 / N as f64;
    let shared_reads = per(after.shared_reads, before.shared_reads);
    let shared_writes = after.shared_writes - before.shared_writes;
    let props = per(after.property_reads, before.property_reads);
    let headers = per(after.header_writes, before.header_writes);
    progress(&format!(
        "calls over {N} successes ({ok} answered 200): {after:?} - {before:?}"
    ));
    row(
        "5",
        &format!("host calls per successful request (sim CallCounts, {N} requests, steady state)"),
        &format!("{props:.2} property reads, {shared_reads:.2} shared reads, {:.2} shared writes, {headers:.2} header writes", shared_writes as f64 / N as f64),
        "",
        "",
    );
    row(
        "5",
        &format!("shared-data writes on {N} successes that change nothing"),
        &format!("{shared_writes}"),
        "0",
        verdict(shared_writes == 0 && ok == N),
    );
    // A success that does change state (it resets a failure streak) writes once.
    if let Some(a) = specs.first() {
        sim.upstreams.insert(a.address.clone(), Behavior::Http(500));
    }
    let _ = sim.request(&[]);
    if let Some(a) = specs.first() {
        sim.upstreams.insert(a.address.clone(), Behavior::Healthy);
    }
    let before = lock(&sim.shared).calls;
    let _ = sim.request(&[]);
    let reset_writes = lock(&sim.shared).calls.shared_writes - before.shared_writes;
    row(
        "5",
        "shared-data writes on a success that resets a failure streak",
        &format!("{reset_writes}"),
        "1 (state changes)",
        verdict(reset_writes == 1),
    );

    // Heap allocations the filter's own code makes per request (buffers the
    // host hands over included, as Envoy allocates them in the VM).
    let settings = settings("ROUND_ROBIN");
    let (mut host, mut root) = filter_with_inventory(4, &settings);
    let one = |host: &mut BenchHost, root: &mut FilterRoot| {
        if let Some(mut state) = root.on_request_headers(host) {
            let first = served(root, &state);
            host.answer(200, first.as_deref());
            root.on_response_headers(host, &mut state);
            root.on_log(host, &state);
        }
    };
    for _ in 0..100 {
        one(&mut host, &mut root);
    }
    let ((), stats) = count_allocs(|| {
        for _ in 0..1000 {
            one(&mut host, &mut root);
        }
    });
    row(
        "5",
        "heap allocations per successful request in the filter (native count, 1,000 requests)",
        &format!("{:.1}", stats.allocs as f64 / 1000.0),
        "",
        "",
    );
}

// ---------------------------------------------------------------------------
// The upstream server (`serve`): one thread per connection, a fixed 200.

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

fn serve(n: usize) -> ExitCode {
    let mut listeners = Vec::new();
    for _ in 0..n.max(1) {
        match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("serve: bind: {e}");
                return ExitCode::from(1);
            }
        }
    }
    {
        let mut out = std::io::stdout().lock();
        for l in &listeners {
            if let Ok(a) = l.local_addr() {
                let _ = writeln!(out, "ADDR {a}");
            }
        }
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    }
    for l in listeners {
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                std::thread::spawn(move || serve_connection(stream));
            }
        });
    }
    // Runs until the parent closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    ExitCode::SUCCESS
}

fn serve_connection(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    let mut out = Vec::with_capacity(RESPONSE.len() * 4);
    // How much of "\r\n\r\n" the bytes so far end with (requests have no body).
    let mut state = 0u8;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        out.clear();
        for &b in buf.iter().take(n) {
            state = match (state, b) {
                (0 | 2, b'\r') => state + 1,
                (1, b'\n') => 2,
                (3, b'\n') => {
                    out.extend_from_slice(RESPONSE);
                    0
                }
                (_, b'\r') => 1,
                _ => 0,
            };
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
    }
}

struct UpstreamProcess {
    child: Child,
    addrs: Vec<SocketAddr>,
}

impl UpstreamProcess {
    fn start(n: usize, cpus: Option<&str>) -> Result<UpstreamProcess, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nice");
        cmd.args(["-n", NICE]);
        match cpus {
            Some(c) => cmd.args(["taskset", "-c", c]).arg(exe),
            None => cmd.arg(exe),
        };
        let mut child = cmd
            .args(["serve", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("upstream: {e}"))?;
        let stdout = child.stdout.take().ok_or("upstream: no stdout")?;
        let mut addrs = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line == "READY" {
                break;
            }
            if let Some(a) = line.strip_prefix("ADDR ").and_then(|a| a.parse().ok()) {
                addrs.push(a);
            }
        }
        if addrs.len() != n {
            let _ = child.kill();
            return Err("upstream did not start".into());
        }
        Ok(UpstreamProcess { child, addrs })
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// 1. Envoy: CPU per request and latency.

/// The guide's four endpoints: P0 us-east-1a, P1 us-east-1b, P2 us-west-2a/b.
fn guide_endpoints(addrs: &[SocketAddr]) -> Vec<EnvoyEndpoint> {
    let layout = [
        ("in-ambient-abc12", NET1, "us-east-1", "us-east-1a", 0),
        ("in-ambient-def34", NET1, "us-east-1", "us-east-1b", 1),
        (
            "in-ambient-xyz98",
            "cluster2-network",
            "us-west-2",
            "us-west-2a",
            2,
        ),
        (
            "in-ambient-uvw56",
            "cluster2-network",
            "us-west-2",
            "us-west-2b",
            2,
        ),
    ];
    layout
        .iter()
        .zip(addrs)
        .map(|((name, net, region, zone, p), a)| {
            EnvoyEndpoint::new(*name, *a)
                .with_label(LABEL_NETWORK, *net)
                .with_label(LABEL_REGION, *region)
                .with_label(LABEL_ZONE, *zone)
                .with_priority(*p)
        })
        .collect()
}

fn guide_node() -> Node {
    Node::with_labels(client_labels())
}

/// Istio's translation of the guide's outlierDetection.
fn istio_outlier() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: 5,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(180),
        max_ejection_percent: 50,
        ..OutlierDetection::default()
    }
}

/// Removes the access logs the generators add (file I/O per request would
/// be the same in every configuration and only dilute the differences).
fn strip_access_logs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("access_log");
            m.remove("upstream_log");
            m.values_mut().for_each(strip_access_logs);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_access_logs),
        _ => {}
    }
}

/// Puts a wasm filter before the router of the (only) listener.
fn insert_http_filter(bootstrap: &mut Value, filter: Value) -> bool {
    let Some(Value::Array(filters)) = bootstrap.pointer_mut(
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
    ) else {
        return false;
    };
    filters.insert(0, filter);
    true
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Native,
    Noop,
    Filter,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Native => "(a) native EDS priorities + outlier detection",
            Variant::Noop => "(b) no-op Rust wasm filter (sets 1 header)",
            Variant::Filter => "(c) locality-failover, override-host",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Variant::Native => "a",
            Variant::Noop => "b",
            Variant::Filter => "c",
        }
    }
}

fn generate(
    variant: Variant,
    addrs: &[SocketAddr],
    layout: &Layout,
    filter_wasm: &Path,
    noop_wasm: &Path,
) -> Result<host_harness::envoy::Generated, String> {
    let endpoints = guide_endpoints(addrs);
    let mut generated = match variant {
        Variant::Native | Variant::Noop => {
            let mut cfg = NativeModeConfig::new(endpoints);
            cfg.node = guide_node();
            cfg.lb_policy = EnvoyLb::RoundRobin;
            cfg.locality_weighted = true;
            cfg.healthy_panic_threshold = Some(0.0);
            cfg.outlier = Some(istio_outlier());
            let mut g = cfg.generate(layout);
            if variant == Variant::Noop {
                let noop = WasmFilter {
                    root_id: "noop".into(),
                    vm_id: "noop".into(),
                    ..WasmFilter::new(noop_wasm, "")
                };
                if !insert_http_filter(&mut g.bootstrap, noop.to_json()) {
                    return Err("cannot place the no-op filter".into());
                }
            }
            g
        }
        Variant::Filter => {
            let mut cfg = FilterModeConfig::new(Steering::override_host(), endpoints);
            cfg.node = guide_node();
            cfg.wasm = Some(WasmFilter::new(
                filter_wasm,
                plugin_config("ROUND_ROBIN").to_string(),
            ));
            cfg.generate(layout)
        }
    };
    strip_access_logs(&mut generated.bootstrap);
    Ok(generated)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Clone, Debug, Default)]
struct WrkResult {
    requests: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        (s, 1.0)
    };
    num.trim().parse::<f64>().ok().map(|v| v * mult)
}

fn run_wrk(
    url: &str,
    connections: u32,
    threads: u32,
    seconds: u32,
    cpus: Option<&str>,
) -> Result<WrkResult, String> {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", NICE]);
    match cpus {
        Some(c) => cmd.args(["taskset", "-c", c, "wrk"]),
        None => cmd.arg("wrk"),
    };
    let out = cmd
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = WrkResult::default();
    for line in text.lines() {
        let t = line.trim();
        let parts: Vec<&str> = t.split_whitespace().collect();
        match parts.as_slice() {
            ["50%", v] => r.p50_us = parse_latency(v).unwrap_or(f64::NAN),
            ["99%", v] => r.p99_us = parse_latency(v).unwrap_or(f64::NAN),
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().unwrap_or(0);
                r.seconds = parse_latency(secs.trim_end_matches(','))
                    .map(|us| us / 1e6)
                    .unwrap_or(0.0);
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                r.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if r.requests == 0 {
        return Err(format!(
            "wrk gave no result:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(r)
}

#[derive(Clone, Debug, Default)]
struct Measurement {
    cpu_us_per_req: f64,
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    requests: u64,
    errors: u64,
}

fn measure(
    envoy: &EnvoyProcess,
    url: &str,
    c: &EnvoyParams,
    tck: f64,
) -> Result<Measurement, String> {
    let pid = envoy.pid();
    let before = cpu_ticks(pid).ok_or("cannot read /proc/<envoy>/stat")?;
    let w = run_wrk(
        url,
        c.connections,
        c.wrk_threads,
        c.seconds,
        c.client_cpus.as_deref(),
    )?;
    let after = cpu_ticks(pid).ok_or("cannot read /proc/<envoy>/stat")?;
    let cpu_s = (after - before) as f64 / tck;
    Ok(Measurement {
        cpu_us_per_req: cpu_s * 1e6 / w.requests as f64,
        p50_us: w.p50_us,
        p99_us: w.p99_us,
        rps: w.requests as f64 / w.seconds.max(1e-9),
        requests: w.requests,
        errors: w.errors,
    })
}

/// Niceness of everything the Envoy benchmark runs (Envoy, wrk, the
/// upstream): on a machine shared with builds and tests, the measured
/// processes get the CPU first, which keeps the numbers steadier.
const NICE: &str = "-10";

/// Pins every thread of `pid` to `cpus` and gives them [`NICE`].
fn pin(pid: u32, cpus: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !tids.is_empty() {
        let _ = Command::new("renice")
            .args(["-n", NICE, "-p"])
            .args(&tids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct EnvoyParams {
    concurrency: u32,
    connections: u32,
    wrk_threads: u32,
    seconds: u32,
    warmup: u32,
    repeats: usize,
    /// CPUs for Envoy; None: not pinned.
    envoy_cpus: Option<String>,
    /// CPUs for wrk and the upstream; None: not pinned.
    client_cpus: Option<String>,
}

/// Starts one Envoy per configuration, warms each up, then measures them in
/// interleaved rounds (a, b, c, a, b, c, ...) so that drift on a shared
/// machine hits every configuration alike. Returns the measurements per name.
fn run_rounds(
    p: &EnvoyParams,
    work: &Path,
    configs: Vec<(String, host_harness::envoy::Generated, Layout)>,
    tck: f64,
    check: &dyn Fn(&str, &EnvoyProcess) -> Result<(), String>,
) -> Result<BTreeMap<String, Vec<Measurement>>, String> {
    let _ = work;
    let mut envoys = Vec::new();
    for (name, generated, layout) in configs {
        let opts = EnvoyOptions {
            concurrency: p.concurrency,
            log_level: "error".into(),
            ..EnvoyOptions::default()
        };
        let envoy =
            EnvoyProcess::start(&layout, &generated, &opts).map_err(|e| format!("{name}: {e}"))?;
        pin(envoy.pid(), p.envoy_cpus.as_deref().unwrap_or("0-1"));
        let addr = envoy.listener().map_err(|e| e.to_string())?;
        envoys.push((name, envoy, format!("http://{addr}/")));
    }
    for (name, _, url) in &envoys {
        progress(&format!(
            "concurrency {}: warm-up {name} ({}s)",
            p.concurrency, p.warmup
        ));
        run_wrk(
            url,
            p.connections,
            p.wrk_threads,
            p.warmup,
            p.client_cpus.as_deref(),
        )?;
    }
    let mut results: BTreeMap<String, Vec<Measurement>> = BTreeMap::new();
    for round in 0..p.repeats {
        for (name, envoy, url) in &envoys {
            let m = measure(envoy, url, p, tck)?;
            progress(&format!(
                "concurrency {} round {} {name}: {:.2} µs CPU/req, p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s, {} requests, {} errors",
                p.concurrency, round + 1, m.cpu_us_per_req, m.p50_us, m.p99_us, m.rps, m.requests, m.errors
            ));
            results.entry(name.clone()).or_default().push(m);
        }
    }
    for (name, envoy, _) in &envoys {
        check(name, envoy)?;
    }
    Ok(results)
}

fn med(
    results: &BTreeMap<String, Vec<Measurement>>,
    name: &str,
    f: fn(&Measurement) -> f64,
) -> f64 {
    let mut xs: Vec<f64> = results
        .get(name)
        .map(|ms| ms.iter().map(f).collect())
        .unwrap_or_default();
    median(&mut xs)
}

fn envoy_phases(seconds: u32, repeats: usize) -> [EnvoyParams; 2] {
    [
        EnvoyParams {
            concurrency: 1,
            connections: 8,
            wrk_threads: 1,
            seconds,
            warmup: 2,
            repeats,
            envoy_cpus: Some("1".into()),
            client_cpus: Some("0".into()),
        },
        EnvoyParams {
            concurrency: 2,
            connections: 8,
            wrk_threads: 1,
            seconds,
            warmup: 2,
            repeats,
            envoy_cpus: None,
            client_cpus: None,
        },
    ]
}

/// (c) must have steered every request to priority 0, without host errors.
fn check_filter_stats(name: &str, envoy: &EnvoyProcess) -> Result<(), String> {
    if !name.starts_with(Variant::Filter.short()) {
        return Ok(());
    }
    let stats = envoy.stats_with_prefix("wasmcustom.locality_failover");
    let p0 = stats
        .get("wasmcustom.locality_failover.requests.priority_0")
        .copied()
        .unwrap_or(0);
    let total: u64 = stats
        .iter()
        .filter(|(k, _)| k.contains("requests.priority_"))
        .map(|(_, v)| *v)
        .sum();
    let errs = stats
        .get("wasmcustom.locality_failover.host_errors")
        .copied()
        .unwrap_or(0);
    progress(&format!(
        "filter stats: {total} steered, {p0} to P0, {errs} host errors"
    ));
    if total == 0 || p0 != total || errs != 0 {
        return Err(format!("the filter did not steer as expected: {stats:?}"));
    }
    Ok(())
}

fn bench_envoy(
    filter_wasm: &Path,
    noop_wasm: &Path,
    seconds: u32,
    repeats: usize,
    only: Option<u32>,
    compare: &[PathBuf],
    floor: Option<&Path>,
) -> Result<(), String> {
    let work = host_harness::envoy::TempDir::new("bench").map_err(|e| e.to_string())?;
    let tck = clk_tck();
    for p in envoy_phases(seconds, repeats)
        .iter()
        .filter(|p| only.is_none_or(|c| c == p.concurrency))
    {
        let upstream = UpstreamProcess::start(4, p.client_cpus.as_deref())?;
        let variants = [Variant::Native, Variant::Noop, Variant::Filter];
        let mut configs = Vec::new();
        for v in variants {
            let layout = Layout::new(
                work.path()
                    .join(format!("c{}-{}", p.concurrency, v.short())),
            );
            let generated = generate(v, &upstream.addrs, &layout, filter_wasm, noop_wasm)?;
            configs.push((v.short().to_string(), generated, layout));
        }
        // Other builds of the filter, measured in the same rounds (A/B).
        for (k, other) in compare.iter().enumerate() {
            let name = format!("c{}", k + 2);
            let layout = Layout::new(work.path().join(format!("c{}-{name}", p.concurrency)));
            let generated = generate(Variant::Filter, &upstream.addrs, &layout, other, noop_wasm)?;
            configs.push((name, generated, layout));
        }
        // The floor of any override-host filter: the probe writes a fixed
        // override-host header (P0, P1, P2) on (c)'s cluster, nothing else.
        if let Some(probe) = floor {
            let layout = Layout::new(work.path().join(format!("c{}-floor", p.concurrency)));
            let mut cfg =
                FilterModeConfig::new(Steering::override_host(), guide_endpoints(&upstream.addrs));
            cfg.node = guide_node();
            let value: Vec<String> = upstream
                .addrs
                .iter()
                .take(3)
                .map(|a| a.to_string())
                .collect();
            cfg.wasm = Some(WasmFilter {
                root_id: "probe".into(),
                vm_id: "probe".into(),
                ..WasmFilter::new(
                    probe,
                    format!(
                        "op=header_set n=1 phase=request arg=x-locality-failover-hosts val={}",
                        value.join(",")
                    ),
                )
            });
            let mut generated = cfg.generate(&layout);
            strip_access_logs(&mut generated.bootstrap);
            configs.push(("floor".into(), generated, layout));
            // The same without the header (the override-host policy's
            // round-robin fallback), and with a plain ROUND_ROBIN cluster.
            for name in ["floor-fallback", "floor-rr"] {
                let layout = Layout::new(work.path().join(format!("c{}-{name}", p.concurrency)));
                cfg.wasm = Some(WasmFilter {
                    root_id: "probe".into(),
                    vm_id: "probe".into(),
                    ..WasmFilter::new(probe, "op=none n=0")
                });
                let mut generated = cfg.generate(&layout);
                strip_access_logs(&mut generated.bootstrap);
                if name == "floor-rr" {
                    if let Some(Value::Object(c)) =
                        generated.clusters.as_mut().and_then(|c| c.first_mut())
                    {
                        c.remove("load_balancing_policy");
                        c.insert("lb_policy".into(), json!("ROUND_ROBIN"));
                    }
                }
                configs.push((name.into(), generated, layout));
            }
        }
        let results = run_rounds(p, work.path(), configs, tck, &check_filter_stats)?;
        let pin_note = match &p.envoy_cpus {
            Some(c) => format!(
                "Envoy on CPU {c}, wrk+upstream on CPU {}",
                p.client_cpus.as_deref().unwrap_or("?")
            ),
            None => "unpinned".into(),
        };
        for v in variants {
            let ms = results.get(v.short()).cloned().unwrap_or_default();
            let reqs: u64 = ms.iter().map(|m| m.requests).sum();
            let errs: u64 = ms.iter().map(|m| m.errors).sum();
            row(
                "1",
                &format!("--concurrency {}: {}", p.concurrency, v.label()),
                &format!(
                    "{:.2} µs CPU/req, p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s ({} requests{}, median of {})",
                    med(&results, v.short(), |m| m.cpu_us_per_req),
                    med(&results, v.short(), |m| m.p50_us),
                    med(&results, v.short(), |m| m.p99_us),
                    med(&results, v.short(), |m| m.rps),
                    reqs,
                    if errs > 0 { format!(", {errs} errors") } else { String::new() },
                    p.repeats
                ),
                "",
                if errs > 0 { "errors" } else { "" },
            );
        }
        let cpu = |v: &str| med(&results, v, |m| m.cpu_us_per_req);
        let cb = cpu("c") / cpu("b");
        let ca = cpu("c") / cpu("a");
        let p99 = med(&results, "c", |m| m.p99_us) / med(&results, "a", |m| m.p99_us);
        let conf = format!(
            "--concurrency {}, wrk -t{} -c{} -d{}s x{}, {pin_note}",
            p.concurrency, p.wrk_threads, p.connections, p.seconds, p.repeats
        );
        row(
            "1",
            &format!("CPU/req (b)/(a): the cost of any Rust wasm filter [{conf}]"),
            &format!("{:.3}x", cpu("b") / cpu("a")),
            "",
            "",
        );
        row(
            "1",
            &format!("CPU/req (c)/(b) [{conf}]"),
            &format!("{cb:.3}x"),
            "<= 1.10x",
            verdict(cb <= 1.10),
        );
        row(
            "1",
            &format!("CPU/req (c)/(a) [{conf}]"),
            &format!("{ca:.3}x"),
            "<= 1.35x",
            verdict(ca <= 1.35),
        );
        row(
            "1",
            &format!("p99 (c)/(a) [{conf}]"),
            &format!("{p99:.3}x"),
            "<= 1.2x",
            verdict(p99 <= 1.2),
        );
        if floor.is_some() {
            let f = cpu("floor");
            row(
                "1",
                &format!("--concurrency {}: floor: fixed override-host header from a no-op filter on (c)'s cluster", p.concurrency),
                &format!("{f:.2} µs CPU/req = {:.3}x (b), {:.3}x (a); (c) - floor = {:.2} µs", f / cpu("b"), f / cpu("a"), cpu("c") - f),
                "",
                "",
            );
            for (name, what) in [
                (
                    "floor-fallback",
                    "same cluster, no header (override-host policy, round-robin fallback)",
                ),
                ("floor-rr", "same cluster as plain ROUND_ROBIN, no header"),
            ] {
                let f = cpu(name);
                row(
                    "1",
                    &format!("--concurrency {}: {what}", p.concurrency),
                    &format!("{f:.2} µs CPU/req = {:.3}x (b)", f / cpu("b")),
                    "",
                    "",
                );
            }
        }
        for (k, other) in compare.iter().enumerate() {
            let name = format!("c{}", k + 2);
            let c = cpu(&name);
            row(
                "1",
                &format!("--concurrency {}: compared build {} ({name})", p.concurrency, other.display()),
                &format!(
                    "{c:.2} µs CPU/req = {:.3}x (b), {:.3}x (a), {:.3}x (c); p99 {:.0} µs = {:.3}x (a)",
                    c / cpu("b"),
                    c / cpu("a"),
                    c / cpu("c"),
                    med(&results, &name, |m| m.p99_us),
                    med(&results, &name, |m| m.p99_us) / med(&results, "a", |m| m.p99_us)
                ),
                "",
                "",
            );
        }
        drop(upstream);
    }
    Ok(())
}

/// Prices single host calls: the probe filter repeats one call `n` times
/// per request; (CPU/request - baseline) / n is that call's cost in Envoy.
fn bench_envoy_probe(
    probe_wasm: &Path,
    seconds: u32,
    repeats: usize,
    n: u32,
) -> Result<(), String> {
    let work = host_harness::envoy::TempDir::new("probe").map_err(|e| e.to_string())?;
    let tck = clk_tck();
    let p = EnvoyParams {
        seconds,
        repeats,
        warmup: 1,
        ..envoy_phases(seconds, repeats)
            .into_iter()
            .next()
            .ok_or("no phase")?
    };
    let upstream = UpstreamProcess::start(4, p.client_cpus.as_deref())?;
    let probes: Vec<(&str, String)> = vec![
        ("baseline (sets 1 header)", "op=none n=0".into()),
        ("get_property xds.cluster_name", format!("op=property n={n} phase=request arg=xds.cluster_name")),
        ("get_property xds.cluster_metadata.filter_metadata.locality-failover.revision", format!("op=property n={n} phase=request arg=xds.cluster_metadata.filter_metadata.locality-failover.revision")),
        ("get_property response.code (on_log)", format!("op=property n={n} phase=log arg=response.code")),
        ("get_property upstream.address (on_log)", format!("op=property n={n} phase=log arg=upstream.address")),
        ("get_shared_data (8 bytes)", format!("op=shared_get n={n} phase=request arg=probe/epoch")),
        ("get_header_map_value (absent)", format!("op=header_get n={n} phase=request arg=x-locality-failover-hosts")),
        ("replace_header_map_value", format!("op=header_set n={n} phase=request arg=x-probe")),
        ("get_current_time_nanoseconds", format!("op=now n={n} phase=request")),
        ("increment_metric", format!("op=metric_inc n={n} phase=request")),
        ("wasm malloc+free of a 48-byte String", format!("op=alloc n={n} phase=request")),
    ];
    let mut configs = Vec::new();
    for (i, (_, cfg)) in probes.iter().enumerate() {
        let layout = Layout::new(work.path().join(format!("probe-{i}")));
        let mut generated = generate(
            Variant::Native,
            &upstream.addrs,
            &layout,
            probe_wasm,
            probe_wasm,
        )?;
        let probe = WasmFilter {
            root_id: "probe".into(),
            vm_id: "probe".into(),
            ..WasmFilter::new(probe_wasm, cfg.clone())
        };
        if !insert_http_filter(&mut generated.bootstrap, probe.to_json()) {
            return Err("cannot place the probe filter".into());
        }
        configs.push((format!("p{i}"), generated, layout));
    }
    let results = run_rounds(&p, work.path(), configs, tck, &|_, _| Ok(()))?;
    let base = med(&results, "p0", |m| m.cpu_us_per_req);
    row(
        "1p",
        "probe baseline: no-op filter on the native cluster",
        &format!("{base:.2} µs CPU/req"),
        "",
        "",
    );
    for (i, (what, _)) in probes.iter().enumerate().skip(1) {
        let c = med(&results, &format!("p{i}"), |m| m.cpu_us_per_req);
        let per = (c - base) / f64::from(n) * 1000.0;
        row(
            "1p",
            &format!("Envoy CPU per host call: {what}"),
            &format!("{per:.0} ns ({c:.2} µs/req with {n} calls)"),
            "",
            "",
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Memory in a real Envoy.

/// Wasm linear memories of a V8 process: a read-write mapping immediately
/// followed by the inaccessible rest of its (>= 4 GiB) reservation.
/// Returns (size, resident) in bytes for each.
fn wasm_memories(pid: u32) -> Vec<(u64, u64)> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return vec![];
    };
    struct Map {
        start: u64,
        end: u64,
        perms: String,
        rss_kib: u64,
    }
    let mut maps: Vec<Map> = Vec::new();
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                maps.push(Map {
                    start,
                    end,
                    perms: parts.next().unwrap_or("").to_string(),
                    rss_kib: 0,
                });
                continue;
            }
        }
        if let Some(v) = line.strip_prefix("Rss:") {
            if let Some(m) = maps.last_mut() {
                m.rss_kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
    }
    let mut out = Vec::new();
    for pair in maps.windows(2) {
        let (rw, guard) = (&pair[0], &pair[1]);
        if rw.perms.starts_with("rw")
            && guard.perms.starts_with("---")
            && rw.end == guard.start
            && (guard.end - rw.start) >= 4 << 30
        {
            out.push((rw.end - rw.start, rw.rss_kib * 1024));
        }
    }
    out
}

fn bench_envoy_memory(filter_wasm: &Path) -> Result<(), String> {
    let work = host_harness::envoy::TempDir::new("bench-mem").map_err(|e| e.to_string())?;
    let mut rss: BTreeMap<(bool, usize), u64> = BTreeMap::new();
    let mut wasm_at_10k = Vec::new();
    for with_filter in [false, true] {
        for n in [10usize, 10_000] {
            let endpoints: Vec<EnvoyEndpoint> = (0..n)
                .map(|i| {
                    let addr = SocketAddr::from(([127, 0, 0, 2], 20_000 + i as u16));
                    let mut e = EnvoyEndpoint::new(format!("ep-{i}"), addr);
                    e.labels = synthetic_labels(i);
                    e
                })
                .collect();
            let mut cfg = FilterModeConfig::new(Steering::override_host(), endpoints);
            cfg.node = guide_node();
            if with_filter {
                cfg.wasm = Some(WasmFilter::new(
                    filter_wasm,
                    plugin_config("ROUND_ROBIN").to_string(),
                ));
            }
            let layout = Layout::new(work.path().join(format!("m-{with_filter}-{n}")));
            let mut generated = cfg.generate(&layout);
            strip_access_logs(&mut generated.bootstrap);
            let opts = EnvoyOptions {
                concurrency: 1,
                log_level: "error".into(),
                ready_timeout: Duration::from_secs(120),
                ..EnvoyOptions::default()
            };
            let envoy =
                EnvoyProcess::start(&layout, &generated, &opts).map_err(|e| e.to_string())?;
            let addr = envoy.listener().map_err(|e| e.to_string())?;
            // A few requests (connect failures: nobody listens): the first
            // makes the filter load the inventory.
            for _ in 0..5 {
                let _ = host_harness::envoy::http_get(addr, "/", &[], Duration::from_secs(20));
            }
            std::thread::sleep(Duration::from_millis(1500));
            let loaded = envoy
                .stat("wasmcustom.locality_failover.inventory_updates")
                .unwrap_or(0);
            let r = rss_kib(envoy.pid()).unwrap_or(0) * 1024;
            rss.insert((with_filter, n), r);
            let mems = wasm_memories(envoy.pid());
            progress(&format!(
                "envoy memory: filter={with_filter} n={n}: RSS {}, inventory updates {loaded}, wasm memories {:?}",
                human_bytes(r as f64),
                mems.iter().map(|(s, r)| format!("{} (resident {})", human_bytes(*s as f64), human_bytes(*r as f64))).collect::<Vec<_>>()
            ));
            if with_filter && n == 10_000 {
                if loaded == 0 {
                    return Err("the filter did not load the 10,000-endpoint inventory".into());
                }
                // An inventory update (new revision, one weight changed):
                // the old and the new inventory meet in the VM's memory.
                cfg.revision = "2".into();
                if let Some(e) = cfg.endpoints.get_mut(1) {
                    e.weight = 2;
                }
                envoy
                    .apply_clusters(&cfg.clusters(), Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
                for _ in 0..5 {
                    let _ = host_harness::envoy::http_get(addr, "/", &[], Duration::from_secs(20));
                }
                std::thread::sleep(Duration::from_millis(1500));
                let updates = envoy
                    .stat("wasmcustom.locality_failover.inventory_updates")
                    .unwrap_or(0);
                let after = wasm_memories(envoy.pid());
                progress(&format!(
                    "envoy memory: after an inventory update ({updates} updates): wasm memories {:?}",
                    after.iter().map(|(s, r)| format!("{} (resident {})", human_bytes(*s as f64), human_bytes(*r as f64))).collect::<Vec<_>>()
                ));
                if updates < 2 {
                    return Err("the filter did not take the inventory update".into());
                }
                wasm_at_10k = after;
            }
        }
    }
    let largest = wasm_at_10k.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let resident = wasm_at_10k.iter().map(|(_, r)| *r).max().unwrap_or(0);
    row(
        "4",
        "Envoy 1.40: wasm linear memory of the worker VM, 10,000 endpoints, after load + one inventory update (memory.size from /proc/<envoy>/smaps; all VMs listed)",
        &format!(
            "{} (resident {}); VMs: {}",
            human_bytes(largest as f64),
            human_bytes(resident as f64),
            wasm_at_10k.iter().map(|(s, _)| human_bytes(*s as f64)).collect::<Vec<_>>().join(", ")
        ),
        "< 8 MiB",
        verdict(largest > 0 && largest < 8 << 20),
    );
    let d = |f| {
        rss.get(&(f, 10_000)).copied().unwrap_or(0) as f64
            - rss.get(&(f, 10)).copied().unwrap_or(0) as f64
    };
    row(
        "4",
        "Envoy 1.40 RSS 10,000 minus 10 endpoints: with the filter / without (Envoy's own hosts + metadata)",
        &format!("{} / {} (filter's share {})", human_bytes(d(true)), human_bytes(d(false)), human_bytes(d(true) - d(false))),
        "",
        "",
    );
    Ok(())
}

// ---------------------------------------------------------------------------

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wasm = PathBuf::from(
        arg_value(&args, "--wasm").unwrap_or_else(|| "build/locality_failover.wasm".into()),
    );
    let noop = PathBuf::from(
        arg_value(&args, "--noop-wasm").unwrap_or_else(|| "build/noop_filter.wasm".into()),
    );
    let seconds: u32 = arg_value(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let repeats: usize = arg_value(&args, "--repeats")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    match args.first().map(String::as_str) {
        Some("engine") => bench_engine(),
        Some("failure") => bench_failure(),
        Some("memory") => bench_memory(&wasm),
        Some("calls") => bench_calls(),
        Some("envoy") => {
            let only = arg_value(&args, "--concurrency").and_then(|c| c.parse().ok());
            let compare: Vec<PathBuf> = arg_value(&args, "--compare")
                .map(|c| {
                    c.split(',')
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default();
            let floor = arg_value(&args, "--floor").map(PathBuf::from);
            if let Err(e) = bench_envoy(
                &wasm,
                &noop,
                seconds,
                repeats,
                only,
                &compare,
                floor.as_deref(),
            ) {
                eprintln!("bench: envoy: {e}");
                row(
                    "1",
                    "Envoy benchmark",
                    &format!("failed: {}", e.lines().next().unwrap_or("")),
                    "",
                    "MISS",
                );
                return ExitCode::from(1);
            }
        }
        Some("envoy-probe") => {
            let probe = PathBuf::from(
                arg_value(&args, "--probe-wasm")
                    .unwrap_or_else(|| "build/probe_filter.wasm".into()),
            );
            let n = arg_value(&args, "--calls")
                .and_then(|s| s.parse().ok())
                .unwrap_or(20);
            if let Err(e) = bench_envoy_probe(&probe, seconds, repeats, n) {
                eprintln!("bench: envoy-probe: {e}");
                return ExitCode::from(1);
            }
        }
        Some("envoy-memory") => {
            if let Err(e) = bench_envoy_memory(&wasm) {
                eprintln!("bench: envoy-memory: {e}");
                row(
                    "4",
                    "Envoy memory benchmark",
                    &format!("failed: {}", e.lines().next().unwrap_or("")),
                    "",
                    "MISS",
                );
                return ExitCode::from(1);
            }
        }
        Some("serve") => return serve(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1)),
        _ => {
            eprintln!("usage: bench_engine engine|failure|memory|calls|envoy|envoy-memory|serve N [--wasm F] [--noop-wasm F] [--seconds S] [--repeats R]");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
