//! Benchmark 3, the failure path: ejection, inventory and configuration
//! change at 10,000 endpoints.

use std::hint::black_box;
use std::time::Instant;

use crate::alloc::{count_allocs, AllocStats};
use crate::fixtures::{
    client_labels, plugin_config, settings, synthetic_address, synthetic_inventory,
};
use crate::host::{filter_with_inventory, served};
use crate::report::{human_ns, median, progress, row};
use locality_failover::config::{OutlierConfig, Settings};
use locality_failover::detector::{self, ClusterView, MemoryStore};
use locality_failover::engine::Engine;
use locality_failover::inventory::Inventory;
use locality_failover::outlier::Outcome;
use locality_failover::ranking::rank;

const N: usize = 10_000;

pub(crate) fn bench_failure() {
    let settings = settings("ROUND_ROBIN");
    let policy = settings.policy.clone();
    let Some(outlier) = policy.outlier.clone() else {
        eprintln!("bench: no outlier configuration");
        return;
    };
    let inventory = synthetic_inventory(N);
    let mut engine = Engine::new(policy.clone(), client_labels(), inventory.clone(), 7);
    ejection(&mut engine, &outlier);
    inventory_change(&mut engine, &inventory);
    config_change(&inventory);
    filter_inventory_change(&settings);
}

fn ejection(engine: &mut Engine, outlier: &OutlierConfig) {
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
                outlier,
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
                outlier,
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
}

fn inventory_change(engine: &mut Engine, inventory: &Inventory) {
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
}

fn config_change(inventory: &Inventory) {
    // Configuration change: Settings::from_bytes + ranking of 10,000.
    let bytes = plugin_config("ROUND_ROBIN").to_string().into_bytes();
    let client = client_labels();
    let mut times = Vec::new();
    let mut stats = AllocStats::default();
    for _ in 0..7 {
        let (d, s) = count_allocs(|| {
            let t = Instant::now();
            if let Ok(s) = Settings::from_bytes(&bytes) {
                black_box(rank(&s.policy.ranking, &client, inventory));
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
}

fn filter_inventory_change(settings: &Settings) {
    // The whole path in the filter: a new revision in the cluster metadata,
    // seen by the next request (decode protobuf, validate, rank, rebuild,
    // create streak keys, re-read the ejection table).
    let (mut host, mut root) = filter_with_inventory(N, settings);
    let mut times = Vec::new();
    let mut stats = AllocStats::default();
    for rev in 2..6 {
        host.publish_inventory(N, &format!("{rev}"), rev);
        // The revision is read at most once per millisecond: the measured
        // request is the first one after that.
        host.now.set(host.now.get() + 1_000_000);
        let (d, s) = count_allocs(|| {
            let t = Instant::now();
            let state = root.on_request_headers(&mut host);
            let d = t.elapsed();
            if let Some(mut state) = state {
                let first = served(&root, &state);
                host.answer(200, first.as_deref());
                root.on_response_headers(&mut host, Some(&mut state));
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
