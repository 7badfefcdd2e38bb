use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::{Settings, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use crate::detector::{record, sweep_if_due, ClusterView, MemoryStore};
use crate::inventory::EndpointSpec;
use crate::outlier::{HostRecord, Outcome};

// ---------------------------------------------------------------- helpers

const ABC12: &str = "in-ambient-7d8f9b6c54-abc12";
const DEF34: &str = "in-ambient-7d8f9b6c54-def34";
const XYZ98: &str = "in-ambient-8e9f0c7d65-xyz98";
const UVW56: &str = "in-ambient-8e9f0c7d65-uvw56";

fn endpoint(name: &str, address: &str, network: &str, region: &str, zone: &str) -> EndpointSpec {
    EndpointSpec {
        address: address.into(),
        name: Some(name.into()),
        labels: [
            (LABEL_NETWORK, network),
            (LABEL_REGION, region),
            (LABEL_ZONE, zone),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect(),
        ..Default::default()
    }
}

/// The guide's topology: cluster 1 (us-east-1a, us-east-1b) and cluster 2
/// (us-west-2a, us-west-2b), one pod each, as in the step-6 seed scenarios.
fn guide_specs() -> Vec<EndpointSpec> {
    vec![
        endpoint(
            ABC12,
            "10.10.0.15:8080",
            "cluster1-network",
            "us-east-1",
            "us-east-1a",
        ),
        endpoint(
            DEF34,
            "10.10.1.8:8080",
            "cluster1-network",
            "us-east-1",
            "us-east-1b",
        ),
        endpoint(
            XYZ98,
            "10.20.0.7:8080",
            "cluster2-network",
            "us-west-2",
            "us-west-2a",
        ),
        endpoint(
            UVW56,
            "10.20.1.4:8080",
            "cluster2-network",
            "us-west-2",
            "us-west-2b",
        ),
    ]
}

fn guide_inventory() -> Inventory {
    Inventory::from_specs(&guide_specs()).unwrap()
}

/// The guide's client (the waypoint): us-east-1a in cluster1-network.
fn guide_client() -> Labels {
    [
        (LABEL_NETWORK, "cluster1-network"),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
    .collect()
}

fn policy(config: &Value) -> Policy {
    Settings::from_bytes(config.to_string().as_bytes())
        .unwrap()
        .policy
}

fn engine(config: &Value, inventory: Inventory) -> Engine {
    Engine::new(policy(config), guide_client(), inventory, 42)
}

fn guide_engine(config: &Value) -> Engine {
    engine(config, guide_inventory())
}

fn zone_region() -> Value {
    json!({
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
    })
}

// The `config` objects of the shared seed scenarios (/work/shared/scenarios).
fn seed_step3() -> Value {
    json!({})
}
fn seed_step4() -> Value {
    json!({"trafficDistribution": "PreferClose"})
}
fn seed_step6_failover_priority() -> Value {
    json!({"trafficDistribution": "PreferClose", "trafficPolicy": zone_region()})
}
fn seed_step6_outlier_ejection() -> Value {
    json!({"trafficPolicy": zone_region()})
}
fn seed_step6_zone_region_order() -> Value {
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
    }})
}

/// Priority of each endpoint, by name.
fn priorities(e: &Engine) -> BTreeMap<String, Option<u32>> {
    e.inventory()
        .endpoints()
        .iter()
        .zip(&e.ranking().priority)
        .map(|(ep, p)| (ep.name.clone(), *p))
        .collect()
}

fn expect_priorities(e: &Engine, want: &[(&str, u32)]) {
    let want: BTreeMap<String, Option<u32>> = want
        .iter()
        .map(|(n, p)| ((*n).to_string(), Some(*p)))
        .collect();
    assert_eq!(priorities(e), want);
}

/// Where `n` decisions went, by endpoint name.
fn tally(e: &mut Engine, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let d = e.decide(1).unwrap();
        let name = e.endpoint(d.pick.endpoint).unwrap().name.clone();
        *out.entry(name).or_default() += 1;
    }
    out
}

fn only(name: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(name.to_string(), n)])
}

fn address_of(e: &Engine, name: &str) -> String {
    e.inventory()
        .endpoints()
        .iter()
        .find(|ep| ep.name == name)
        .unwrap()
        .address
        .clone()
}

/// An ejection table with `names` ejected at time 0.
fn table(e: &Engine, names: &[&str], generation: u64) -> EjectionTable {
    let mut t = EjectionTable {
        generation,
        ..Default::default()
    };
    for name in names {
        t.hosts.insert(
            address_of(e, name),
            HostRecord {
                ejected: true,
                backoff: 1,
                ejections: 1,
                ..Default::default()
            },
        );
    }
    t
}

// --------------------------------------------------- seed scenarios

#[test]
fn seed_step3_prefer_network_ranking_and_failover() {
    // Guide step 3 (PreferNetwork = [network]): the local network is P0, cluster 2 P1;
    // all traffic stays local while healthy (envoy distributeLoad: P0 health 100).
    let mut e = guide_engine(&seed_step3());
    expect_priorities(&e, &[(ABC12, 0), (DEF34, 0), (XYZ98, 1), (UVW56, 1)]);
    let t = tally(&mut e, 200);
    assert_eq!(
        t.get(XYZ98).copied().unwrap_or(0) + t.get(UVW56).copied().unwrap_or(0),
        0,
        "{t:?}"
    );
    // The scenario's own two endpoints: local pod down -> cluster 2 takes everything.
    let specs = vec![
        endpoint(
            ABC12,
            "10.10.0.15:8080",
            "cluster1-network",
            "us-east-1",
            "us-east-1a",
        ),
        endpoint(
            XYZ98,
            "10.20.0.7:8080",
            "cluster2-network",
            "us-west-2",
            "us-west-2a",
        ),
    ];
    let mut e = engine(&seed_step3(), Inventory::from_specs(&specs).unwrap());
    expect_priorities(&e, &[(ABC12, 0), (XYZ98, 1)]);
    assert_eq!(tally(&mut e, 10), only(ABC12, 10));
    let t = table(&e, &[ABC12], 1);
    e.apply_table(&t);
    assert_eq!(tally(&mut e, 5), only(XYZ98, 5));
}

#[test]
fn seed_step4_prefer_close_ranking_and_failover() {
    // Guide step 4 (PreferClose = [network, region, zone], 1.31 network-first rule):
    // zone, then region, then the other region.
    let mut e = guide_engine(&seed_step4());
    expect_priorities(&e, &[(ABC12, 0), (DEF34, 1), (XYZ98, 2), (UVW56, 2)]);
    assert_eq!(tally(&mut e, 10), only(ABC12, 10));
    let t = table(&e, &[ABC12], 1);
    e.apply_table(&t);
    assert_eq!(tally(&mut e, 10), only(DEF34, 10));
    let t = table(&e, &[ABC12, DEF34], 2);
    e.apply_table(&t);
    // Both zone and region empty: the other region (LEAST_REQUEST over its two pods).
    let t = tally(&mut e, 100);
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t[XYZ98] > 0 && t[UVW56] > 0, "{t:?}");
}

#[test]
fn seed_step6_failover_priority_ranking() {
    // Guide step 6: the DR's [zone, region] wins over PreferClose (istio
    // GetLocalityLbSetting); zone misses first, so def34 shares P1 with cluster 2.
    let mut e = guide_engine(&seed_step6_failover_priority());
    expect_priorities(&e, &[(ABC12, 0), (DEF34, 1), (XYZ98, 1), (UVW56, 1)]);
    assert_eq!(tally(&mut e, 10), only(ABC12, 10));
    // Cluster 1 gone: round robin over both cluster 2 pods (5/5 of 10).
    let specs: Vec<EndpointSpec> = guide_specs().into_iter().skip(2).collect();
    e.set_inventory(Inventory::from_specs(&specs).unwrap(), None);
    let t = tally(&mut e, 10);
    assert_eq!(
        t,
        BTreeMap::from([(XYZ98.to_string(), 5), (UVW56.to_string(), 5)])
    );
    // Scaled back: same zone again.
    e.set_inventory(guide_inventory(), None);
    assert_eq!(tally(&mut e, 10), only(ABC12, 10));
}

#[test]
fn seed_step6_outlier_ejection_spreads_over_the_other_three() {
    // Guide step 6, crash variant: five 503s eject abc12 (envoy ejectHost, 1/4 <= 50%);
    // P0 health 0 -> P1 takes 100% (distributeLoad) and round robin spreads it over
    // def34, xyz98 and uvw56 alike.
    let mut e = guide_engine(&seed_step6_outlier_ejection());
    expect_priorities(&e, &[(ABC12, 0), (DEF34, 1), (XYZ98, 1), (UVW56, 1)]);
    assert_eq!(tally(&mut e, 4), only(ABC12, 4));
    let cfg = e.policy().outlier.clone().unwrap();
    let addresses: Vec<String> = e
        .inventory()
        .endpoints()
        .iter()
        .map(|x| x.address.clone())
        .collect();
    let present = |a: &str| addresses.iter().any(|x| x == a);
    let view = ClusterView {
        total_hosts: 4,
        present: &present,
    };
    let mut store = MemoryStore::default();
    crate::detector::arm(&mut store, &cfg, 0, 0).unwrap();
    let abc = address_of(&e, ABC12);
    for i in 0..5 {
        let r = record(&mut store, &cfg, &abc, Outcome::Http(503), 1, &view).unwrap();
        assert_eq!(r.ejected(), i == 4);
    }
    assert!(e.apply_table(&store.table));
    assert!(e.is_unhealthy(e.index_of(&abc).unwrap()));
    assert_eq!(e.load_view().load, vec![0, 100]);
    let t = tally(&mut e, 300);
    assert_eq!(
        t,
        BTreeMap::from([
            (DEF34.to_string(), 100),
            (XYZ98.to_string(), 100),
            (UVW56.to_string(), 100)
        ])
    );
    // After baseEjectionTime (3m) and the next sweep it takes the traffic again.
    let s = 1_000_000_000u64;
    let mut now = 10 * s;
    while now <= 200 * s {
        sweep_if_due(&mut store, &cfg, now, &present).unwrap();
        now += 10 * s;
    }
    assert!(!store.table.is_ejected(&abc));
    assert!(e.apply_table(&store.table));
    assert_eq!(tally(&mut e, 6), only(ABC12, 6));
}

#[test]
fn seed_step6_zone_region_order_ranking_and_failover() {
    // Guide step 6 as meant: [network, region, zone] gives zone -> region -> other region.
    let mut e = guide_engine(&seed_step6_zone_region_order());
    expect_priorities(&e, &[(ABC12, 0), (DEF34, 1), (XYZ98, 2), (UVW56, 2)]);
    assert_eq!(tally(&mut e, 4), only(ABC12, 4));
    let t = table(&e, &[ABC12], 1);
    e.apply_table(&t);
    assert_eq!(tally(&mut e, 10), only(DEF34, 10));
    // Same-region pod ejected too (2/4 = 50% allowed): traffic leaves the region.
    let t = table(&e, &[ABC12, DEF34], 2);
    e.apply_table(&t);
    assert_eq!(e.load_view().load, vec![0, 0, 100]);
    let t = tally(&mut e, 10);
    assert_eq!(
        t,
        BTreeMap::from([(XYZ98.to_string(), 5), (UVW56.to_string(), 5)])
    );
}

// ------------------------------------------------------------- decide

#[test]
fn decide_lists_retry_hosts_after_the_pick() {
    // balancer.rs fallbacks via Engine::decide: the pick (P0), then the next priorities'
    // healthy hosts, at most max_hosts.
    let mut e = guide_engine(&seed_step6_zone_region_order());
    let name = |e: &Engine, i: usize| e.endpoint(i).unwrap().name.clone();
    let d = e.decide(3).unwrap();
    let names: Vec<String> = d.hosts.iter().map(|i| name(&e, *i)).collect();
    assert_eq!(names, vec![ABC12, DEF34, XYZ98]);
    assert_eq!(d.hosts[0], d.pick.endpoint);
    let d = e.decide(1).unwrap();
    assert_eq!(d.hosts.len(), 1);
    // max 0 still returns the pick.
    let d = e.decide(0).unwrap();
    assert_eq!(d.hosts, vec![d.pick.endpoint]);
}

#[test]
fn nothing_healthy_with_panic_threshold_0_decides_nothing() {
    // envoy load_balancer_impl.cc recalculatePerPriorityPanic: threshold 0 (Istio's
    // minHealthPercent default) and no healthy host -> 503 "no healthy upstream".
    let mut e = guide_engine(&seed_step6_zone_region_order());
    let t = table(&e, &[ABC12, DEF34, XYZ98, UVW56], 1);
    e.apply_table(&t);
    assert_eq!(e.decide(3), None);
}

#[test]
fn min_health_percent_panics_into_ejected_hosts() {
    // envoy load_balancer_impl.cc isHostSetInPanic: minHealthPercent 50 with every host
    // ejected -> total panic, picks from all hosts.
    let mut config = seed_step6_zone_region_order();
    config["trafficPolicy"]["outlierDetection"]["minHealthPercent"] = json!(50);
    let mut e = guide_engine(&config);
    let t = table(&e, &[ABC12, DEF34, XYZ98, UVW56], 1);
    e.apply_table(&t);
    let d = e.decide(1).unwrap();
    assert!(d.pick.panic);
}

#[test]
fn apply_table_is_cheap_for_the_same_generation() {
    // engine.rs apply_table: nothing to do when the generation did not change.
    let mut e = guide_engine(&seed_step6_zone_region_order());
    let t = table(&e, &[ABC12], 7);
    assert!(e.apply_table(&t));
    assert_eq!(e.table_generation(), Some(7));
    assert!(!e.apply_table(&t));
    let t = table(&e, &[], 8);
    assert!(e.apply_table(&t));
    assert!(!e.is_unhealthy(0));
}

// ----------------------------------------------------------- inventory

#[test]
fn set_inventory_keeps_ejections_by_address() {
    // engine.rs set_inventory: re-ranks and keeps the ejections of endpoints that are
    // still there, found by address (indexes move).
    let mut e = guide_engine(&seed_step6_zone_region_order());
    let t = table(&e, &[DEF34], 3);
    e.apply_table(&t);
    let def34 = address_of(&e, DEF34);
    let mut specs = guide_specs();
    specs.reverse();
    specs.remove(0); // uvw56 goes away
    e.set_inventory(Inventory::from_specs(&specs).unwrap(), Some(&t));
    let i = e.index_of(&def34).unwrap();
    assert_eq!(i, 1);
    assert!(e.is_unhealthy(i));
    for (j, _) in e.inventory().endpoints().iter().enumerate() {
        assert_eq!(e.is_unhealthy(j), j == i);
    }
    assert!(!e.contains("10.20.1.4:8080"));
    expect_priorities(&e, &[(ABC12, 0), (DEF34, 1), (XYZ98, 2)]);
    // abc12 ejected later: def34 is still out, so cluster 2 takes the traffic.
    let t = table(&e, &[ABC12, DEF34], 4);
    e.apply_table(&t);
    assert_eq!(tally(&mut e, 5), only(XYZ98, 5));
}

#[test]
fn set_inventory_keeps_active_requests_by_address() {
    // engine.rs set_inventory: least-request counters follow the endpoint's address.
    let mut e = guide_engine(&seed_step3());
    let i = e.index_of("10.10.1.8:8080").unwrap();
    e.begin(i);
    e.begin(i);
    let mut specs = guide_specs();
    specs.reverse();
    e.set_inventory(Inventory::from_specs(&specs).unwrap(), None);
    let j = e.index_of("10.10.1.8:8080").unwrap();
    assert_ne!(i, j);
    assert_eq!(e.active[j], 2);
    assert_eq!(e.active.iter().sum::<u32>(), 2);
}

// -------------------------------------------------------- least request

#[test]
fn least_request_bookkeeping_steers_away_from_busy_hosts() {
    // envoy least_request_lb.cc unweightedHostPickNChoices: rq_active of each choice;
    // Engine::begin / end keep those counts.
    // One priority, no locality weighting (locality LB off), LEAST_REQUEST:
    // inside a priority the two choices decide. (With failoverPriority, Istio
    // turns on locality-weighted LB and Envoy picks the locality first.)
    let mut e = guide_engine(
        &json!({"trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST",
        "localityLbSetting": {"enabled": false}}}}),
    );
    let abc = e.index_of("10.10.0.15:8080").unwrap();
    for _ in 0..5 {
        e.begin(abc);
    }
    assert_eq!(e.active[abc], 5);
    let t = tally(&mut e, 4000);
    let busy = t.get(ABC12).copied().unwrap_or(0);
    // Two choices among four hosts: the busy one only when both choices hit it (1/16).
    assert!((150..=350).contains(&busy), "{t:?}");
    for _ in 0..5 {
        e.end("10.10.0.15:8080");
    }
    assert_eq!(e.active[abc], 0);
    // Saturates at zero, ignores unknown addresses.
    e.end("10.10.0.15:8080");
    e.end("192.0.2.1:80");
    assert_eq!(e.active[abc], 0);
    let t = tally(&mut e, 4000);
    // All idle: a fair quarter each.
    let idle = t.get(ABC12).copied().unwrap_or(0);
    assert!((850..=1150).contains(&idle), "{t:?}");
}

// ---------------------------------------------------------- determinism

#[test]
fn same_seed_gives_the_same_picks() {
    // engine.rs: pure and deterministic; randomness from the seeded Rng only.
    let run = |seed: u64| {
        let mut e = Engine::new(
            policy(&seed_step3()),
            guide_client(),
            guide_inventory(),
            seed,
        );
        (0..200)
            .map(|_| e.decide(3).unwrap())
            .collect::<Vec<Decision>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

// ----------------------------------------------------------- distribute

fn distribute_config(simple: &str) -> Value {
    json!({"trafficPolicy": {"loadBalancer": {
        "simple": simple,
        "localityLbSetting": {"distribute": [{
            "from": "us-east-1/*",
            "to": {"us-east-1/us-east-1a": 80, "us-west-2/us-west-2a": 20}
        }]}
    }}})
}

#[test]
fn distribute_splits_traffic_by_locality_weight() {
    // istio loadbalancer.go applyLocalityWeights + envoy locality_weight.rst: 80/20 over
    // the named localities; us-east-1b and us-west-2b get nothing.
    let mut e = guide_engine(&distribute_config("ROUND_ROBIN"));
    assert_eq!(priorities(&e)[DEF34], None);
    assert_eq!(priorities(&e)[UVW56], None);
    let t = tally(&mut e, 1000);
    assert!(
        t.get(ABC12).copied().unwrap_or(0).abs_diff(800) <= 1,
        "{t:?}"
    );
    assert!(
        t.get(XYZ98).copied().unwrap_or(0).abs_diff(200) <= 1,
        "{t:?}"
    );
}

#[test]
fn distribute_with_random_still_follows_locality_weights() {
    // istio loadbalancer.go applyLocalityWeights sets locality weights and
    // LocalityWeightedLbConfig; envoy load_balancer_impl.cc ZoneAwareLoadBalancerBase::
    // hostSourceToUse chooses the locality by weight (chooseHealthyLocality) for every
    // policy, RANDOM included, then a random host inside it.
    let mut e = guide_engine(&distribute_config("RANDOM"));
    let t = tally(&mut e, 10_000);
    let east = t.get(ABC12).copied().unwrap_or(0);
    assert!(
        (7600..=8400).contains(&east),
        "us-east-1a got {east} of 10000: {t:?}"
    );
}

#[test]
fn failover_priority_picks_localities_by_effective_weight() {
    // istio reference §2.2 (LocalityLBSettings.ApplyToCluster: LocalityWeightedLbConfig when
    // enableFailover and failoverPriority) and §3.5; envoy upstream_impl.cc
    // effectiveLocalityWeight: w * min(1.0, OF/100 * healthy/hosts).
    let specs = vec![
        endpoint(
            "a1",
            "10.0.0.1:80",
            "cluster1-network",
            "us-east-1",
            "us-east-1a",
        ),
        endpoint(
            "a2",
            "10.0.0.2:80",
            "cluster1-network",
            "us-east-1",
            "us-east-1a",
        ),
        endpoint(
            "a3",
            "10.0.0.3:80",
            "cluster1-network",
            "us-east-1",
            "us-east-1a",
        ),
        endpoint(
            "b1",
            "10.0.0.4:80",
            "cluster1-network",
            "us-east-1",
            "us-east-1b",
        ),
    ];
    let config = json!({"trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {
            "failoverPriority": ["topology.istio.io/network"]
        }},
        "outlierDetection": {"maxEjectionPercent": 50}
    }});
    let mut e = engine(&config, Inventory::from_specs(&specs).unwrap());
    let t = table(&e, &["a1"], 1);
    e.apply_table(&t);
    // us-east-1a: weight 3 * min(1, 1.4 * 2/3) = 2.8; us-east-1b: 1. b1 gets 1/3.8 = 26.3%.
    let t = tally(&mut e, 3800);
    let b1 = t.get("b1").copied().unwrap_or(0);
    assert!((900..=1100).contains(&b1), "b1 got {b1} of 3800: {t:?}");
}

// ------------------------------------------------ inventory versions

#[test]
fn replacing_the_inventory_hands_back_the_old_addresses_by_index() {
    let mut e = guide_engine(&zone_region());
    let before = e.version();
    let old: Vec<String> = e
        .inventory()
        .endpoints()
        .iter()
        .map(|x| x.address.clone())
        .collect();
    let mut specs = guide_specs();
    specs.reverse();
    specs.pop();
    let retired = e.replace_inventory(Inventory::from_specs(&specs).unwrap());
    assert_eq!(retired, old, "index i of the old inventory is retired[i]");
    assert_ne!(
        e.version(),
        before,
        "indices now refer to another inventory"
    );
    assert_eq!(e.inventory().len(), 3);
}

#[test]
fn end_index_undoes_begin() {
    let mut e = guide_engine(&zone_region());
    e.begin(2);
    e.begin(2);
    e.end_index(2);
    e.end_index(7); // out of range: ignored
    assert_eq!(e.active.get(2), Some(&1));
}
