use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::time::Duration;

// ---------------------------------------------------------------- helpers

const S: u64 = 1_000_000_000;

fn cfg() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 5,
        enforcing_5xx: true,
        consecutive_gateway: 5,
        enforcing_gateway: false,
        split_local_origin: false,
        consecutive_local_origin: 5,
        enforcing_local_origin: true,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_time: Duration::from_secs(300),
        max_ejection_percent: 50,
    }
}

fn split_cfg() -> OutlierConfig {
    OutlierConfig {
        split_local_origin: true,
        ..cfg()
    }
}

fn everyone(_: &str) -> bool {
    true
}

fn record_n(s: &mut Streaks, outcome: Outcome, n: usize, cfg: &OutlierConfig) -> Vec<Detections> {
    (0..n).map(|_| s.record(outcome, cfg)).collect()
}

const NONE: Detections = [None, None];

fn eject(
    t: &mut EjectionTable,
    address: &str,
    total: usize,
    now: u64,
    cfg: &OutlierConfig,
) -> EjectResult {
    t.on_detection(
        address,
        Detection::Consecutive5xx,
        total,
        &everyone,
        now,
        cfg,
    )
}

// ------------------------------------------------------------- streaks

#[test]
fn consecutive_5xx_fires_exactly_once_on_reaching_the_threshold() {
    // envoy outlier_detection_impl.cc putHttpResponseCode:
    // `if (++consecutive_5xx_ == threshold) onConsecutive5xx()`.
    let c = cfg();
    let mut s = Streaks::default();
    let out = record_n(&mut s, Outcome::Http(500), 4, &c);
    assert!(out.iter().all(|d| *d == NONE));
    assert_eq!(
        s.record(Outcome::Http(500), &c),
        [Some(Detection::Consecutive5xx), None]
    );
    // Not reset (e.g. the host was already ejected): 6, 7, ... never equal 5 again.
    let out = record_n(&mut s, Outcome::Http(500), 20, &c);
    assert!(out.iter().all(|d| *d == NONE));
    assert_eq!(s.c5xx, 25);
}

#[test]
fn non_5xx_resets_both_streaks() {
    // envoy outlier_detection_impl.cc putHttpResponseCode: a non-5xx sets
    // consecutive_5xx_ = 0 and consecutive_gateway_failure_ = 0.
    let c = cfg();
    for code in [200u16, 404, 499] {
        let mut s = Streaks::default();
        record_n(&mut s, Outcome::Http(502), 3, &c);
        assert_eq!((s.c5xx, s.gateway), (3, 3));
        assert_eq!(s.record(Outcome::Http(code), &c), NONE);
        assert_eq!((s.c5xx, s.gateway), (0, 0), "{code}");
    }
}

#[test]
fn non_gateway_5xx_resets_only_the_gateway_streak() {
    // envoy outlier_detection_impl.cc putHttpResponseCode: a 5xx that is not 502/503/504
    // resets consecutive_gateway_failure_ and still counts toward consecutive_5xx_.
    let c = cfg();
    let mut s = Streaks::default();
    record_n(&mut s, Outcome::Http(503), 3, &c);
    s.record(Outcome::Http(500), &c);
    assert_eq!((s.c5xx, s.gateway), (4, 0));
}

#[test]
fn gateway_streak_fires_with_the_5xx_streak() {
    // envoy outlier_detection_impl.cc putHttpResponseCode: 502/503/504 count toward both
    // streaks; both reach 5 together.
    let c = cfg();
    let mut s = Streaks::default();
    record_n(&mut s, Outcome::Http(504), 4, &c);
    assert_eq!(
        s.record(Outcome::Http(502), &c),
        [
            Some(Detection::Consecutive5xx),
            Some(Detection::ConsecutiveGateway)
        ]
    );
}

#[test]
fn connect_failure_counts_as_503() {
    // envoy outlier_detection_impl.cc resultToHttpCode: LocalOriginConnectFailed ->
    // 503 (ServiceUnavailable) without the split: both streaks.
    let c = cfg();
    let mut s = Streaks::default();
    let out = record_n(&mut s, Outcome::ConnectFailed, 5, &c);
    assert_eq!((s.c5xx, s.gateway, s.local_origin), (5, 5, 0));
    assert_eq!(
        out[4],
        [
            Some(Detection::Consecutive5xx),
            Some(Detection::ConsecutiveGateway)
        ]
    );
}

#[test]
fn timeout_counts_as_504() {
    // envoy outlier_detection_impl.cc resultToHttpCode: LocalOriginTimeout -> 504
    // (GatewayTimeout) without the split: both streaks.
    let c = cfg();
    let mut s = Streaks::default();
    record_n(&mut s, Outcome::Timeout, 2, &c);
    assert_eq!((s.c5xx, s.gateway, s.local_origin), (2, 2, 0));
    // A 500 after timeouts resets the gateway streak only (504 is a gateway error).
    s.record(Outcome::Http(500), &c);
    assert_eq!((s.c5xx, s.gateway), (3, 0));
}

#[test]
fn split_mode_counts_local_origin_failures_separately() {
    // envoy outlier_detection_impl.cc putResultWithLocalExternalSplit: timeouts and
    // connect failures -> localOriginFailure() only; `++local == threshold` fires once.
    let c = split_cfg();
    let mut s = Streaks::default();
    let out = record_n(&mut s, Outcome::ConnectFailed, 4, &c);
    assert!(out.iter().all(|d| *d == NONE));
    assert_eq!(
        s.record(Outcome::Timeout, &c),
        [Some(Detection::ConsecutiveLocalOrigin), None]
    );
    assert_eq!((s.c5xx, s.gateway, s.local_origin), (0, 0, 5));
    assert_eq!(s.record(Outcome::Timeout, &c), NONE);
}

#[test]
fn split_mode_response_resets_local_origin() {
    // envoy outlier_detection_impl.cc putResultWithLocalExternalSplit:
    // LocalOriginConnectSuccess -> localOriginNoFailure() resets the local-origin streak;
    // an HTTP answer means the connection worked. The HTTP code still counts as usual.
    let c = split_cfg();
    let mut s = Streaks::default();
    record_n(&mut s, Outcome::ConnectFailed, 3, &c);
    s.record(Outcome::Http(200), &c);
    assert_eq!(s.local_origin, 0);
    record_n(&mut s, Outcome::ConnectFailed, 3, &c);
    s.record(Outcome::Http(503), &c);
    assert_eq!((s.c5xx, s.gateway, s.local_origin), (1, 1, 0));
}

#[test]
fn reset_clears_only_the_detectors_counter() {
    // envoy outlier_detection_impl.cc onConsecutiveErrorWorker: resetConsecutive5xx /
    // resetConsecutiveGatewayFailure / resetConsecutiveLocalOriginFailure per type.
    let mut s = Streaks {
        c5xx: 5,
        gateway: 5,
        local_origin: 5,
    };
    s.reset(Detection::Consecutive5xx);
    assert_eq!((s.c5xx, s.gateway, s.local_origin), (0, 5, 5));
    s.reset(Detection::ConsecutiveGateway);
    assert_eq!((s.c5xx, s.gateway, s.local_origin), (0, 0, 5));
    s.reset(Detection::ConsecutiveLocalOrigin);
    assert!(s.is_zero());
}

// ------------------------------------------------------------------ cap

#[test]
fn cap_counts_all_hosts_of_the_cluster() {
    // envoy outlier_detection_impl.cc ejectHost: ejected% = 100 * (active + 1) /
    // host_monitors_.size() (all priorities) <= max_ejection_percent.
    // 4 hosts at 50%: 25% and 50% are allowed, 75% overflows.
    let c = cfg();
    let mut t = EjectionTable::default();
    assert_eq!(eject(&mut t, "a", 4, 0, &c), EjectResult::Ejected);
    assert_eq!(eject(&mut t, "b", 4, 0, &c), EjectResult::Ejected);
    assert_eq!(eject(&mut t, "c", 4, 0, &c), EjectResult::Overflow);
    assert!(!t.is_ejected("c"));
    assert_eq!(t.active(&everyone), 2);
}

#[test]
fn default_10_percent_with_9_hosts_never_ejects() {
    // envoy outlier_detection_impl.cc ejectHost (since PR #27624/#27909 the first
    // ejection is no longer let through): 100 * 1 / 9 = 11.1% > 10%.
    let c = OutlierConfig {
        max_ejection_percent: 10,
        ..cfg()
    };
    let mut t = EjectionTable::default();
    assert_eq!(eject(&mut t, "a", 9, 0, &c), EjectResult::Overflow);
    assert!(t.hosts.is_empty());
    // With 10 hosts exactly one fits (10% <= 10%), a second does not.
    assert_eq!(eject(&mut t, "a", 10, 0, &c), EjectResult::Ejected);
    assert_eq!(eject(&mut t, "b", 10, 0, &c), EjectResult::Overflow);
}

#[test]
fn cap_counts_only_ejections_of_present_hosts() {
    // envoy outlier_detection_impl.cc: ejections_active_ follows the host set; a removed
    // host's monitor (and its ejection) goes away with it.
    let c = cfg();
    let mut t = EjectionTable::default();
    eject(&mut t, "gone", 4, 0, &c);
    eject(&mut t, "a", 4, 0, &c);
    let present = |a: &str| a != "gone";
    assert_eq!(t.active(&present), 1);
    assert_eq!(
        t.on_detection("b", Detection::Consecutive5xx, 4, &present, 0, &c),
        EjectResult::Ejected
    );
}

#[test]
fn not_enforced_detector_does_not_eject() {
    // envoy outlier_detection_impl.cc ejectHost: enforceEjection(type) false
    // (enforcing_consecutive_gateway_failure defaults to 0) -> no ejection.
    let c = cfg();
    let mut t = EjectionTable::default();
    let before = t.clone();
    assert_eq!(
        t.on_detection("a", Detection::ConsecutiveGateway, 4, &everyone, 0, &c),
        EjectResult::NotEnforced
    );
    assert_eq!(t, before);
    assert!(!t.is_ejected("a"));
    let off = OutlierConfig {
        enforcing_5xx: false,
        ..cfg()
    };
    assert_eq!(eject(&mut t, "a", 4, 0, &off), EjectResult::NotEnforced);
    assert!(!t.is_ejected("a"));
}

#[test]
fn already_ejected_host_is_left_alone() {
    // envoy outlier_detection_impl.cc onConsecutiveErrorWorker: a host that already has
    // FAILED_OUTLIER_CHECK returns early.
    let c = cfg();
    let mut t = EjectionTable::default();
    eject(&mut t, "a", 4, 0, &c);
    let before = t.clone();
    assert_eq!(
        eject(&mut t, "a", 4, 5 * S, &c),
        EjectResult::AlreadyEjected
    );
    assert_eq!(t, before);
}

#[test]
fn ejection_records_time_and_count() {
    // envoy outlier_detection_impl.cc DetectorHostMonitorImpl::eject: num_ejections_++,
    // last_ejection_time_ = now.
    let c = cfg();
    let mut t = EjectionTable::default();
    let g = t.generation;
    eject(&mut t, "a", 4, 7 * S, &c);
    let h = t.hosts["a"];
    assert!(h.ejected);
    assert_eq!(h.ejected_at, 7 * S);
    assert_eq!(h.ejections, 1);
    assert_eq!(h.backoff, 1);
    assert!(t.generation > g);
}

// ------------------------------------------------- backoff and duration

/// Ejects `a` at `now`, then sweeps until it is back; returns (backoff at ejection,
/// time it came back).
fn eject_and_wait(t: &mut EjectionTable, now: u64, c: &OutlierConfig) -> (u32, u64) {
    assert_eq!(eject(t, "a", 2, now, c), EjectResult::Ejected);
    let backoff = t.hosts["a"].backoff;
    let mut at = now;
    loop {
        at += S;
        if !t.sweep(at, &everyone, c).is_empty() {
            return (backoff, at);
        }
        assert!(at - now <= 400 * S, "never came back");
    }
}

#[test]
fn backoff_grows_by_one_until_backoff_times_base_reaches_max_plus_base() {
    // envoy outlier_detection_impl.cc ejectHost: `if (backoff * base < max + base)
    // backoff++`. base 30s, max 300s: 1, 2, ..., 11, then stays at 11 (11*30 = 330).
    let c = OutlierConfig {
        max_ejection_percent: 100,
        ..cfg()
    };
    let mut t = EjectionTable::default();
    let mut now = 0;
    let mut seen = Vec::new();
    for _ in 0..13 {
        let (backoff, back) = eject_and_wait(&mut t, now, &c);
        seen.push(backoff);
        now = back; // re-eject at once: no decay in between
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 11]);
}

#[test]
fn ejection_lasts_base_times_backoff_capped_at_max() {
    // envoy outlier_detection_impl.cc checkHostForUneject:
    // min(base * backoff, max) <= now - last_ejection. Sweeping every second here:
    // 30s, 60s, 90s, ..., then 300s once base * backoff exceeds max.
    let c = OutlierConfig {
        max_ejection_percent: 100,
        ..cfg()
    };
    let mut t = EjectionTable::default();
    let mut now = 0;
    let mut durations = Vec::new();
    for _ in 0..12 {
        let (_, back) = eject_and_wait(&mut t, now, &c);
        durations.push((back - now) / S);
        now = back;
    }
    assert_eq!(
        durations,
        vec![30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
    );
}

#[test]
fn guide_base_3m_backoff_caps_at_3() {
    // envoy outlier_detection_impl.cc ejectHost with base 3m and max max(300s, 3m) = 300s:
    // backoff 1 (180s), 2 (min(360, 300) = 300s), 3 (300s), then 3*180 = 540 >= 480 stops.
    let c = OutlierConfig {
        base_ejection_time: Duration::from_secs(180),
        max_ejection_percent: 100,
        ..cfg()
    };
    let mut t = EjectionTable::default();
    let mut now = 0;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (backoff, back) = eject_and_wait(&mut t, now, &c);
        seen.push((backoff, (back - now) / S));
        now = back;
    }
    assert_eq!(seen, vec![(1, 180), (2, 300), (3, 300), (3, 300)]);
}

#[test]
fn unejection_happens_only_at_a_sweep() {
    // envoy outlier_detection_impl.cc: hosts are unejected by onIntervalTimer ->
    // checkHostForUneject only; time passing alone changes nothing.
    let c = cfg();
    let mut t = EjectionTable::default();
    t.arm(0, 0, &c); // sweeps at 10, 20, 30, 40 s...
    eject(&mut t, "a", 4, 5 * S, &c);
    assert!(t.is_ejected("a"));
    assert!(!t.sweep_due(9 * S));
    assert!(t.sweep_due(10 * S));
    // Sweeps at 10, 20, 30 s: 25 s < 30 s, still ejected.
    for s in [10, 20, 30] {
        assert!(t.sweep(s * S, &everyone, &c).is_empty(), "{s}");
        assert!(t.is_ejected("a"));
    }
    // At 40 s (35 s after the ejection) it returns: the real ejection is rounded up to
    // the next sweep.
    assert_eq!(t.sweep(40 * S, &everyone, &c), vec!["a".to_string()]);
    assert!(!t.is_ejected("a"));
    assert_eq!(t.hosts["a"].unejected_at, Some(40 * S));
}

#[test]
fn unejection_at_exactly_the_ejection_time() {
    // envoy outlier_detection_impl.cc checkHostForUneject: `<=`, so a sweep exactly
    // base * backoff after the ejection brings it back.
    let c = cfg();
    let mut t = EjectionTable::default();
    eject(&mut t, "a", 4, 10 * S, &c);
    assert!(t.sweep(40 * S - 1, &everyone, &c).is_empty());
    assert_eq!(t.sweep(40 * S, &everyone, &c), vec!["a".to_string()]);
}

#[test]
fn backoff_decays_by_one_per_sweep_once_an_interval_has_passed_since_return() {
    // envoy outlier_detection_impl.cc checkHostForUneject: a host not ejected whose
    // now - last_unejection >= interval gets backoff-- (floor 0) at each sweep.
    let c = OutlierConfig {
        max_ejection_percent: 100,
        ..cfg()
    };
    let mut t = EjectionTable::default();
    let (_, back1) = eject_and_wait(&mut t, 0, &c);
    let (_, back2) = eject_and_wait(&mut t, back1, &c);
    let (_, back3) = eject_and_wait(&mut t, back2, &c);
    assert_eq!(t.hosts["a"].backoff, 3);
    // Less than an interval since the return: no decay.
    t.sweep(back3 + 5 * S, &everyone, &c);
    assert_eq!(t.hosts["a"].backoff, 3);
    t.sweep(back3 + 10 * S, &everyone, &c);
    assert_eq!(t.hosts["a"].backoff, 2);
    t.sweep(back3 + 20 * S, &everyone, &c);
    assert_eq!(t.hosts["a"].backoff, 1);
    t.sweep(back3 + 30 * S, &everyone, &c);
    // Back to 0: nothing left to remember.
    assert!(!t.hosts.contains_key("a"));
    // The next ejection lasts base again.
    let (backoff, back) = eject_and_wait(&mut t, back3 + 31 * S, &c);
    assert_eq!(backoff, 1);
    assert_eq!(back - (back3 + 31 * S), 30 * S);
}

#[test]
fn host_returned_in_this_sweep_keeps_its_backoff() {
    // envoy outlier_detection_impl.cc checkHostForUneject: a host unejected in this sweep
    // has now - last_unejection = 0 < interval, so no decay at that sweep.
    let c = cfg();
    let mut t = EjectionTable::default();
    eject(&mut t, "a", 4, 0, &c);
    t.sweep(30 * S, &everyone, &c);
    assert_eq!(t.hosts["a"].backoff, 1);
}

#[test]
fn records_of_endpoints_no_longer_present_are_forgotten() {
    // envoy outlier_detection_impl.cc onClusterMemberUpdate: removed hosts lose their
    // monitors (and any ejection).
    let c = cfg();
    let mut t = EjectionTable::default();
    eject(&mut t, "a", 4, 0, &c);
    eject(&mut t, "b", 4, 0, &c);
    let present = |a: &str| a == "b";
    assert!(t.sweep(S, &present, &c).is_empty());
    assert!(!t.hosts.contains_key("a"));
    assert!(t.is_ejected("b"));
}

#[test]
fn sweep_rearms_one_interval_from_now() {
    // envoy outlier_detection_impl.cc onIntervalTimer: armIntervalTimer() after each run.
    let c = cfg();
    let mut t = EjectionTable::default();
    t.arm(0, 0, &c);
    t.sweep(13 * S, &everyone, &c);
    assert_eq!(t.next_sweep, 23 * S);
    assert!(!t.sweep_due(22 * S));
    assert!(t.sweep_due(23 * S));
}

#[test]
fn arm_only_once() {
    // envoy outlier_detection_impl.cc DetectorImpl::initialize arms the interval timer
    // once per cluster; here the first worker to arrive arms it.
    let c = cfg();
    let mut t = EjectionTable::default();
    assert!(!t.sweep_due(u64::MAX));
    assert!(t.arm(5 * S, 5 * S, &c));
    assert_eq!(t.next_sweep, 15 * S);
    assert!(!t.arm(7 * S, 7 * S, &c));
    assert_eq!(t.next_sweep, 15 * S);
}

#[test]
fn sweeps_count_from_configuration_not_from_the_first_request() {
    // envoy outlier_detection_impl.cc: the interval timer starts when the
    // cluster is created. Configured at 0 with a 10s interval, a first
    // request at 15s finds the next sweep at 20s, not 25s.
    let c = cfg();
    let mut t = EjectionTable::default();
    assert!(t.arm(15 * S, 0, &c));
    assert_eq!(t.next_sweep, 20 * S);
    let mut t = EjectionTable::default();
    assert!(t.arm(20 * S, 0, &c));
    assert_eq!(
        t.next_sweep,
        30 * S,
        "a sweep exactly now has already happened"
    );
}

#[test]
fn a_sweep_that_changes_nothing_keeps_the_generation() {
    // Readers rebuild their balancer on a new generation; a timer tick with
    // nothing to uneject or decay must not make them (Envoy rebuilds its
    // schedulers only when a host set changes).
    let c = cfg();
    let mut t = EjectionTable::default();
    t.arm(0, 0, &c);
    let g = t.generation;
    let back = t.sweep(10 * S, &|_| true, &c);
    assert!(back.is_empty());
    assert_eq!(t.generation, g);
    assert_eq!(t.next_sweep, 20 * S);
}
