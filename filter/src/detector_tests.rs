use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::time::Duration;

use crate::config::istio::OutlierDetection;

// ---------------------------------------------------------------- helpers

const S: u64 = 1_000_000_000;
const HOSTS: [&str; 4] = [
    "10.10.0.15:8080",
    "10.10.1.8:8080",
    "10.20.0.7:8080",
    "10.20.1.4:8080",
];

/// The guide's outlierDetection: consecutive5xxErrors 5, interval 10s,
/// baseEjectionTime 3m, maxEjectionPercent 50.
fn guide_cfg() -> OutlierConfig {
    OutlierConfig::from_istio(&OutlierDetection {
        consecutive_5xx_errors: Some(5),
        interval: Some("10s".into()),
        base_ejection_time: Some("3m".into()),
        max_ejection_percent: Some(50),
        ..Default::default()
    })
    .unwrap()
}

fn present(address: &str) -> bool {
    HOSTS.contains(&address)
}

fn cluster() -> ClusterView<'static> {
    ClusterView {
        total_hosts: HOSTS.len(),
        present: &present,
    }
}

fn record_n(
    store: &mut MemoryStore,
    cfg: &OutlierConfig,
    address: &str,
    outcome: Outcome,
    n: usize,
    now: u64,
) -> Vec<Recorded> {
    (0..n)
        .map(|_| record(store, cfg, address, outcome, now, &cluster()).unwrap())
        .collect()
}

fn streaks(store: &MemoryStore, address: &str) -> Streaks {
    store.streaks.get(address).copied().unwrap_or_default()
}

// --------------------------------------------------------------- record

#[test]
fn fifth_5xx_ejects_with_the_guides_config_and_resets_the_streak() {
    // envoy outlier_detection_impl.cc putHttpResponseCode (++c == 5) ->
    // onConsecutiveErrorWorker -> ejectHost (1/4 = 25% <= 50%) -> resetConsecutive5xx.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    let a = HOSTS[0];
    let out = record_n(&mut store, &cfg, a, Outcome::Http(500), 4, S);
    assert!(out.iter().all(|r| r.detections.is_empty()));
    assert!(!store.table.is_ejected(a));
    let r = record(&mut store, &cfg, a, Outcome::Http(500), 2 * S, &cluster()).unwrap();
    assert_eq!(
        r.detections,
        vec![(Detection::Consecutive5xx, EjectResult::Ejected)]
    );
    assert!(r.ejected());
    assert!(store.table.is_ejected(a));
    assert_eq!(store.table.hosts[a].ejected_at, 2 * S);
    assert_eq!(streaks(&store, a).c5xx, 0);
}

#[test]
fn five_503s_eject_once_and_leave_the_gateway_streak() {
    // envoy outlier_detection_impl.cc: 503 feeds both streaks; the 5xx detection ejects
    // and resets its counter; the gateway detection then finds the host already ejected
    // and returns without resetting (onConsecutiveErrorWorker early return).
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    let a = HOSTS[0];
    let out = record_n(&mut store, &cfg, a, Outcome::Http(503), 5, S);
    assert_eq!(
        out[4].detections,
        vec![
            (Detection::Consecutive5xx, EjectResult::Ejected),
            (Detection::ConsecutiveGateway, EjectResult::AlreadyEjected)
        ]
    );
    let s = streaks(&store, a);
    assert_eq!((s.c5xx, s.gateway), (0, 5));
}

#[test]
fn detection_on_an_already_ejected_host_leaves_the_counter() {
    // envoy outlier_detection_impl.cc onConsecutiveErrorWorker: `if
    // (host->healthFlagGet(FAILED_OUTLIER_CHECK)) return;` before the counter reset.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    let a = HOSTS[0];
    record_n(&mut store, &cfg, a, Outcome::Http(500), 5, S);
    assert!(store.table.is_ejected(a));
    let table = store.table.clone();
    let out = record_n(&mut store, &cfg, a, Outcome::Http(500), 5, 2 * S);
    assert_eq!(
        out[4].detections,
        vec![(Detection::Consecutive5xx, EjectResult::AlreadyEjected)]
    );
    assert!(!out[4].ejected());
    assert_eq!(streaks(&store, a).c5xx, 5);
    assert_eq!(store.table, table);
}

#[test]
fn overflow_still_resets_the_streak() {
    // envoy outlier_detection_impl.cc onConsecutiveErrorWorker: ejectHost, then the
    // counter reset, whether or not the cap let the ejection through.
    // 4 hosts at 50%: the third ejection overflows.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    record_n(&mut store, &cfg, HOSTS[0], Outcome::Http(500), 5, S);
    record_n(&mut store, &cfg, HOSTS[1], Outcome::Http(500), 5, S);
    let out = record_n(&mut store, &cfg, HOSTS[2], Outcome::Http(500), 5, S);
    assert_eq!(
        out[4].detections,
        vec![(Detection::Consecutive5xx, EjectResult::Overflow)]
    );
    assert!(!store.table.is_ejected(HOSTS[2]));
    assert_eq!(streaks(&store, HOSTS[2]).c5xx, 0);
    assert_eq!(store.table.active(&present), 2);
}

#[test]
fn not_enforced_detection_resets_the_streak_without_ejecting() {
    // istio cluster_traffic_policy.go: consecutive5xxErrors 0 -> enforcing 0; gateway
    // errors are not enforced unless set. envoy ejectHost: enforceEjection false; the
    // counter is reset anyway.
    let cfg = OutlierConfig::from_istio(&OutlierDetection {
        consecutive_5xx_errors: Some(0),
        max_ejection_percent: Some(50),
        ..Default::default()
    })
    .unwrap();
    let mut store = MemoryStore::default();
    let a = HOSTS[0];
    let out = record_n(&mut store, &cfg, a, Outcome::Http(503), 5, S);
    assert_eq!(
        out[4].detections,
        vec![(Detection::ConsecutiveGateway, EjectResult::NotEnforced)]
    );
    assert!(!store.table.is_ejected(a));
    assert_eq!(store.table, EjectionTable::default());
    assert_eq!(streaks(&store, a).gateway, 0);
}

#[test]
fn detection_for_a_removed_host_is_ignored() {
    // envoy outlier_detection_impl.cc onConsecutiveErrorWorker: "There is a chance that
    // the host has already been removed from the set. If so, just ignore it."
    // (`if (host_monitors_.count(host) == 0) return;`)
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    let removed = "10.99.0.1:8080";
    assert!(!present(removed));
    record_n(&mut store, &cfg, removed, Outcome::Http(500), 5, S);
    assert!(!store.table.is_ejected(removed));
    assert!(store.table.hosts.is_empty());
}

#[test]
fn success_on_zero_streaks_writes_nothing() {
    // detector.rs OutlierStore: nothing is written when nothing changed (a success on
    // zero streaks is the common path and must not touch shared data).
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    for _ in 0..10 {
        let r = record(
            &mut store,
            &cfg,
            HOSTS[0],
            Outcome::Http(200),
            S,
            &cluster(),
        )
        .unwrap();
        assert!(r.detections.is_empty());
    }
    assert_eq!(store.writes, 0);
    assert!(store.streaks.is_empty());
}

#[test]
fn success_after_a_failure_writes_once() {
    // envoy outlier_detection_impl.cc putHttpResponseCode: a non-5xx resets the streaks
    // (one write); the next success has nothing to change.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    let a = HOSTS[0];
    record(&mut store, &cfg, a, Outcome::Http(500), S, &cluster()).unwrap();
    assert_eq!(store.writes, 1);
    record(&mut store, &cfg, a, Outcome::Http(200), S, &cluster()).unwrap();
    assert_eq!(store.writes, 2);
    assert!(streaks(&store, a).is_zero());
    record(&mut store, &cfg, a, Outcome::Http(200), S, &cluster()).unwrap();
    assert_eq!(store.writes, 2);
}

// --------------------------------------------------------------- sweep

#[test]
fn sweep_if_due_returns_hosts_and_resets_their_streaks() {
    // envoy outlier_detection_impl.cc checkHostForUneject: on uneject,
    // resetConsecutive5xx / GatewayFailure / LocalOriginFailure.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    let a = HOSTS[0];
    arm(&mut store, &cfg, 0, 0).unwrap();
    record_n(&mut store, &cfg, a, Outcome::Http(500), 5, S);
    // More failures while ejected (e.g. in-flight requests): counted, not acted on.
    record_n(&mut store, &cfg, a, Outcome::Http(503), 2, 2 * S);
    assert_eq!(streaks(&store, a).c5xx, 2);
    // Sweeps every 10 s; base 3m: still ejected at 180 s (179 s after the ejection).
    let mut now = 10 * S;
    while now <= 180 * S {
        let back = sweep_if_due(&mut store, &cfg, now, &present).unwrap();
        assert_eq!(back, Some(vec![]), "at {now}");
        now += 10 * S;
    }
    assert!(store.table.is_ejected(a));
    let back = sweep_if_due(&mut store, &cfg, 190 * S, &present).unwrap();
    assert_eq!(back, Some(vec![a.to_string()]));
    assert!(!store.table.is_ejected(a));
    assert!(streaks(&store, a).is_zero());
}

#[test]
fn sweep_if_due_does_nothing_before_the_interval() {
    // envoy outlier_detection_impl.cc: the sweep runs on the interval timer only.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    arm(&mut store, &cfg, 0, 0).unwrap();
    let writes = store.writes;
    assert_eq!(
        sweep_if_due(&mut store, &cfg, 9 * S, &present).unwrap(),
        None
    );
    assert_eq!(store.writes, writes);
    assert!(sweep_if_due(&mut store, &cfg, 10 * S, &present)
        .unwrap()
        .is_some());
    assert_eq!(store.table.next_sweep, 20 * S);
}

#[test]
fn sweep_if_due_before_arming_does_nothing() {
    // detector.rs: next_sweep 0 means the timer is not armed yet.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    assert_eq!(
        sweep_if_due(&mut store, &cfg, 1_000 * S, &present).unwrap(),
        None
    );
    assert_eq!(store.writes, 0);
}

#[test]
fn arm_only_once() {
    // envoy outlier_detection_impl.cc DetectorImpl::initialize: one interval timer per
    // cluster; later workers find it armed and write nothing.
    let cfg = guide_cfg();
    let mut store = MemoryStore::default();
    arm(&mut store, &cfg, 3 * S, 3 * S).unwrap();
    assert_eq!(store.writes, 1);
    assert_eq!(store.table.next_sweep, 13 * S);
    arm(&mut store, &cfg, 5 * S, 5 * S).unwrap();
    assert_eq!(store.writes, 1);
    assert_eq!(store.table.next_sweep, 13 * S);
}

#[test]
fn guide_config_maps_as_istio_does() {
    // istio cluster_traffic_policy.go applyOutlierDetection + Envoy defaults.
    let cfg = guide_cfg();
    assert_eq!(cfg.consecutive_5xx, 5);
    assert!(cfg.enforcing_5xx);
    assert!(!cfg.enforcing_gateway);
    assert_eq!(cfg.interval, Duration::from_secs(10));
    assert_eq!(cfg.base_ejection_time, Duration::from_secs(180));
    assert_eq!(cfg.max_ejection_time, Duration::from_secs(300));
    assert_eq!(cfg.max_ejection_percent, 50);
}
