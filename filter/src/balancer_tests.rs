use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

// ---------------------------------------------------------------- helpers

/// A ranking with `sizes[p]` endpoints at priority p, inventory indexes in order.
fn ranking(sizes: &[usize]) -> Ranking {
    let mut priority = Vec::new();
    for (p, n) in sizes.iter().enumerate() {
        priority.extend(std::iter::repeat_n(Some(p as u32), *n));
    }
    let weight = vec![1; priority.len()];
    Ranking {
        priority,
        weight,
        levels: sizes.len() as u32,
        ..Default::default()
    }
}

/// `healthy[p]` healthy endpoints first in each priority of `sizes`, the rest ejected.
fn unhealthy(sizes: &[usize], healthy: &[usize]) -> Vec<bool> {
    sizes
        .iter()
        .zip(healthy)
        .flat_map(|(n, h)| (0..*n).map(move |i| i >= *h))
        .collect()
}

fn build(policy: LbPolicy, threshold: u32, sizes: &[usize], healthy: &[usize]) -> (Balancer, Rng) {
    let mut rng = Rng::new(7);
    let mut b = Balancer::new(policy, threshold);
    b.rebuild(&ranking(sizes), &unhealthy(sizes, healthy), &mut rng);
    (b, rng)
}

fn view(threshold: u32, sizes: &[usize], healthy: &[usize]) -> LoadView {
    build(LbPolicy::RoundRobin, threshold, sizes, healthy)
        .0
        .view()
}

fn counts(b: &mut Balancer, rng: &mut Rng, n: usize, active: &[u32], hosts: usize) -> Vec<usize> {
    let mut c = vec![0; hosts];
    for _ in 0..n {
        let pick = b.pick(rng, active).unwrap();
        c[pick.endpoint] += 1;
    }
    c
}

// ------------------------------------------------------ priority load

#[test]
fn health_is_min_100_of_140_times_healthy_over_total() {
    // envoy load_balancer_impl.cc recalculatePerPriorityState:
    // health = min(100, overprovisioning_factor(140) * healthy / hosts), integer.
    let v = view(0, &[4, 2, 3, 7], &[3, 1, 1, 0]);
    // 140*3/4 = 105 -> 100; 140*1/2 = 70; 140*1/3 = 46; 0.
    assert_eq!(v.health, vec![100, 70, 46, 0]);
}

#[test]
fn p0_keeps_all_traffic_down_to_5_of_7_healthy() {
    // envoy docs load_balancing/priority.rst: P0 keeps 100% until fewer than ~71.4%
    // (100/1.4) of its hosts are healthy; 140*5/7 = 100.
    let v = view(0, &[7, 2], &[5, 2]);
    assert_eq!(v.health, vec![100, 100]);
    assert_eq!(v.load, vec![100, 0]);
    // 4 of 7: 140*4/7 = 80 -> 80/20.
    let v = view(0, &[7, 2], &[4, 2]);
    assert_eq!(v.load, vec![80, 20]);
}

#[test]
fn half_healthy_p0_spills_30_percent() {
    // envoy load_balancer_impl.cc distributeLoad; spec §3.2: P0 50% healthy ->
    // health 70 -> 70%/30% with a healthy P1.
    let v = view(0, &[4, 2], &[2, 2]);
    assert_eq!(v.health, vec![70, 100]);
    assert_eq!(v.load, vec![70, 30]);
}

#[test]
fn loads_are_normalised_when_total_health_is_below_100() {
    // envoy load_balancer_impl.cc distributeLoad: load_i = min(remaining,
    // health_i * 100 / normalized_total_availability); healths {20, 30} -> {40, 60}.
    // 1 of 7 healthy -> 140/7 = 20; 3 of 14 -> 420/14 = 30.
    let v = view(0, &[7, 14], &[1, 3]);
    assert_eq!(v.health, vec![20, 30]);
    assert_eq!(v.load, vec![40, 60]);
    assert_eq!(v.panic, vec![false, false]);
}

#[test]
fn rounding_remainder_goes_to_first_available_priority() {
    // envoy load_balancer_impl.cc recalculatePerPriorityState: "Anything that remains
    // should just be rounding errors, so allocate that to the first available priority".
    // Healths {30, 40}: NTA 70, 30*100/70 = 42, 40*100/70 = 57, remainder 1 -> P0.
    let v = view(0, &[14, 7], &[3, 2]);
    assert_eq!(v.health, vec![30, 40]);
    assert_eq!(v.load, vec![43, 57]);
    // With P0 fully ejected the first available priority is P1.
    let v = view(0, &[3, 14, 7], &[0, 3, 2]);
    assert_eq!(v.health, vec![0, 30, 40]);
    assert_eq!(v.load, vec![0, 43, 57]);
}

#[test]
fn spill_over_follows_priority_order() {
    // envoy load_balancer_impl.cc distributeLoad: each priority takes what it can of the
    // remaining load, in order; a healthy P1 takes everything P0 leaves.
    let v = view(0, &[2, 2, 2], &[0, 1, 2]);
    assert_eq!(v.health, vec![0, 70, 100]);
    assert_eq!(v.load, vec![0, 70, 30]);
}

#[test]
fn picks_follow_the_priority_load() {
    // envoy load_balancer_impl.cc choosePriority: uniform 1..=100 roll over the
    // cumulative loads (70/30 here).
    let (mut b, mut rng) = build(LbPolicy::RoundRobin, 0, &[4, 2], &[2, 2]);
    let mut p1 = 0;
    for _ in 0..10_000 {
        if b.pick(&mut rng, &[]).unwrap().priority == 1 {
            p1 += 1;
        }
    }
    assert!((2700..=3300).contains(&p1), "P1 got {p1} of 10000");
}

// ---------------------------------------------------------------- panic

#[test]
fn panic_threshold_0_and_nothing_healthy_gives_p0_100_and_no_host() {
    // envoy load_balancer_impl.cc recalculatePerPriorityPanic: "panic is disabled and
    // there is no hosts available ... 100% is assigned to P=0"; no host can be picked
    // (503 no healthy upstream).
    let (mut b, mut rng) = build(LbPolicy::RoundRobin, 0, &[2, 3], &[0, 0]);
    let v = b.view();
    assert_eq!(v.load, vec![100, 0]);
    assert_eq!(v.panic, vec![false, false]);
    for _ in 0..100 {
        assert_eq!(b.pick(&mut rng, &[]), None);
    }
}

#[test]
fn panic_threshold_0_never_panics() {
    // envoy load_balancer_impl.cc isHostSetInPanic: healthy% < 0 is never true.
    let (mut b, mut rng) = build(LbPolicy::RoundRobin, 0, &[5], &[1]);
    assert_eq!(b.view().panic, vec![false]);
    for _ in 0..50 {
        assert_eq!(b.pick(&mut rng, &[]).unwrap().endpoint, 0);
    }
}

#[test]
fn panicking_priority_picks_from_all_its_hosts() {
    // envoy load_balancer_impl.cc isHostSetInPanic + chooseHost: a priority whose
    // healthy% is below the threshold (50) picks from ALL its hosts, unhealthy included;
    // the others keep to their healthy hosts.
    // P0: 1 of 5 healthy (20%, health 28); P1: 1 of 2 healthy (50%, health 70): NTA 98.
    let (mut b, mut rng) = build(LbPolicy::RoundRobin, 50, &[5, 2], &[1, 1]);
    let v = b.view();
    assert_eq!(v.health, vec![28, 70]);
    // 28*100/98 = 28 (+1 remainder), 70*100/98 = 71.
    assert_eq!(v.load, vec![29, 71]);
    assert_eq!(v.panic, vec![true, false]);
    let mut seen = [0usize; 7];
    for _ in 0..3000 {
        let pick = b.pick(&mut rng, &[]).unwrap();
        assert_eq!(pick.panic, pick.priority == 0);
        seen[pick.endpoint] += 1;
    }
    // Every P0 host, ejected or not, was used; P1's ejected host (6) never.
    assert!(seen[..5].iter().all(|c| *c > 0), "{seen:?}");
    assert!(seen[5] > 0);
    assert_eq!(seen[6], 0);
}

#[test]
fn no_panic_when_normalised_total_health_is_100() {
    // envoy load_balancer_impl.cc recalculatePerPriorityPanic: per_priority_panic_[i] =
    // normalized_total_availability == 100 ? false : isHostSetInPanic(...).
    let v = view(50, &[4, 2], &[1, 2]);
    assert_eq!(v.health, vec![35, 100]);
    assert_eq!(v.panic, vec![false, false]);
    assert_eq!(v.load, vec![35, 65]);
}

#[test]
fn all_priorities_in_panic_load_by_host_counts() {
    // envoy load_balancer_impl.cc recalculateLoadInTotalPanic: load_i = 100 * hosts_i /
    // total hosts, remainder to the first non-empty priority.
    let v = view(50, &[3, 1], &[0, 0]);
    assert_eq!(v.panic, vec![true, true]);
    assert_eq!(v.load, vec![75, 25]);
    let v = view(50, &[1, 1, 1], &[0, 0, 0]);
    assert_eq!(v.load, vec![34, 33, 33]);
    // Some hosts healthy, but every priority under 50%: 25% and 33%.
    let v = view(50, &[4, 6], &[1, 2]);
    assert_eq!(v.health, vec![35, 46]);
    assert_eq!(v.panic, vec![true, true]);
    assert_eq!(v.load, vec![40, 60]);
}

#[test]
fn total_panic_picks_unhealthy_hosts() {
    // envoy load_balancer_impl.cc: in panic, hosts are chosen from all hosts.
    let (mut b, mut rng) = build(LbPolicy::RoundRobin, 50, &[2], &[0]);
    let pick = b.pick(&mut rng, &[]).unwrap();
    assert!(pick.panic);
    assert!(pick.endpoint < 2);
}

// ------------------------------------------------- host selection

#[test]
fn round_robin_cycles_through_healthy_hosts_in_order() {
    // envoy load_balancer_impl.cc EdfLoadBalancerBase::unweightedHostPick:
    // hosts_to_use[rr_index++ % size] over the healthy hosts (ejected ones skipped).
    let sizes = [5];
    let mut unhealthy = vec![false; 5];
    unhealthy[2] = true;
    let mut rng = Rng::new(3);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 0);
    b.rebuild(&ranking(&sizes), &unhealthy, &mut rng);
    let order = [0usize, 1, 3, 4];
    let picks: Vec<usize> = (0..12)
        .map(|_| b.pick(&mut rng, &[]).unwrap().endpoint)
        .collect();
    let start = order.iter().position(|h| *h == picks[0]).unwrap();
    for (k, p) in picks.iter().enumerate() {
        assert_eq!(*p, order[(start + k) % order.len()], "{picks:?}");
    }
}

#[test]
fn round_robin_cursor_survives_a_rebuild() {
    // envoy load_balancer_impl.cc: rr_indexes_ are kept per host source across updates.
    let sizes = [3];
    let mut rng = Rng::new(11);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 0);
    b.rebuild(&ranking(&sizes), &[false; 3], &mut rng);
    let first = b.pick(&mut rng, &[]).unwrap().endpoint;
    b.rebuild(&ranking(&sizes), &[false; 3], &mut rng);
    let second = b.pick(&mut rng, &[]).unwrap().endpoint;
    assert_eq!(second, (first + 1) % 3);
}

#[test]
fn weighted_round_robin_is_proportional() {
    // envoy edf_scheduler.h: with unequal weights each host is due every 1/weight, so
    // weights 1 and 3 over 400 picks give 100 and 300 (within one).
    let mut rng = Rng::new(5);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 0);
    let r = Ranking {
        priority: vec![Some(0), Some(0)],
        weight: vec![1, 3],
        levels: 1,
        ..Default::default()
    };
    b.rebuild(&r, &[false, false], &mut rng);
    let c = counts(&mut b, &mut rng, 400, &[], 2);
    assert!(c[0].abs_diff(100) <= 1 && c[1].abs_diff(300) <= 1, "{c:?}");
}

#[test]
fn weighted_round_robin_three_hosts() {
    // envoy edf_scheduler.h: weights 1, 2, 5 over 800 picks -> 100/200/500 (within one).
    let mut rng = Rng::new(9);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 0);
    let r = Ranking {
        priority: vec![Some(0); 3],
        weight: vec![1, 2, 5],
        levels: 1,
        ..Default::default()
    };
    b.rebuild(&r, &[false; 3], &mut rng);
    let c = counts(&mut b, &mut rng, 800, &[], 3);
    for (got, want) in c.iter().zip([100usize, 200, 500]) {
        assert!(got.abs_diff(want) <= 1, "{c:?}");
    }
}

#[test]
fn weighted_round_robin_skips_ejected_hosts() {
    // envoy load_balancer_impl.cc: the healthy-hosts scheduler holds healthy hosts only.
    let mut rng = Rng::new(5);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 0);
    let r = Ranking {
        priority: vec![Some(0); 3],
        weight: vec![1, 3, 2],
        levels: 1,
        ..Default::default()
    };
    b.rebuild(&r, &[false, true, false], &mut rng);
    let c = counts(&mut b, &mut rng, 300, &[], 3);
    assert_eq!(c[1], 0);
    assert!(c[0].abs_diff(100) <= 1 && c[2].abs_diff(200) <= 1, "{c:?}");
}

#[test]
fn random_spreads_over_all_hosts() {
    // envoy random_lb: a uniformly random healthy host.
    let (mut b, mut rng) = build(LbPolicy::Random, 0, &[4], &[4]);
    let c = counts(&mut b, &mut rng, 4000, &[], 4);
    assert!(c.iter().all(|n| (850..=1150).contains(n)), "{c:?}");
}

#[test]
fn least_request_spreads_over_all_idle_hosts() {
    // envoy least_request_lb.cc unweightedHostPickNChoices: two random choices; with
    // equal active counts the first one wins, so the spread is uniform.
    let (mut b, mut rng) = build(LbPolicy::LeastRequest, 0, &[4], &[4]);
    let c = counts(&mut b, &mut rng, 4000, &[0, 0, 0, 0], 4);
    assert!(c.iter().all(|n| (850..=1150).contains(n)), "{c:?}");
}

#[test]
fn least_request_prefers_the_less_loaded_host() {
    // envoy least_request_lb.cc unweightedHostPickNChoices: of two random choices the one
    // with fewer active requests wins: with 2 hosts, the idle one is chosen unless both
    // choices hit the busy one (probability 3/4).
    let (mut b, mut rng) = build(LbPolicy::LeastRequest, 0, &[2], &[2]);
    let c = counts(&mut b, &mut rng, 4000, &[5, 0], 2);
    assert!((2800..=3200).contains(&c[1]), "{c:?}");
}

#[test]
fn weighted_least_request_scales_weight_by_active_requests() {
    // envoy least_request_lb.cc hostWeight: weight = load_balancing_weight /
    // (active_requests + 1)^active_request_bias when weights are not all equal.
    // Host 1 (weight 3) has 1000 active requests: effective 3/1001 against host 0's 1/1,
    // so host 0 should take almost every pick (the static schedule gives host 1 300/400).
    let mut rng = Rng::new(5);
    let mut b = Balancer::new(LbPolicy::LeastRequest, 0);
    let r = Ranking {
        priority: vec![Some(0), Some(0)],
        weight: vec![1, 3],
        levels: 1,
        ..Default::default()
    };
    b.rebuild(&r, &[false, false], &mut rng);
    let c = counts(&mut b, &mut rng, 400, &[0, 1000], 2);
    assert!(c[1] < 50, "busy weight-3 host got {} of 400 picks", c[1]);
}

#[test]
fn pick_reports_priority_and_endpoint() {
    // envoy load_balancer_impl.cc chooseHost: the host comes from the chosen priority.
    let (mut b, mut rng) = build(LbPolicy::RoundRobin, 0, &[2, 3], &[0, 3]);
    for _ in 0..30 {
        let pick = b.pick(&mut rng, &[]).unwrap();
        assert_eq!(pick.priority, 1);
        assert!((2..5).contains(&pick.endpoint));
        assert!(!pick.panic);
    }
}

#[test]
fn empty_ranking_picks_nothing() {
    // envoy: no hosts, no pick.
    let mut rng = Rng::new(1);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 50);
    b.rebuild(&ranking(&[]), &[], &mut rng);
    assert_eq!(b.levels(), 0);
    assert_eq!(b.pick(&mut rng, &[]), None);
}

// ------------------------------------------------------------ fallbacks

fn pick_at(endpoint: usize, priority: u32, panic: bool) -> Pick {
    Pick {
        endpoint,
        priority,
        panic,
    }
}

#[test]
fn fallbacks_list_the_pick_then_round_robin_order_then_lower_priorities() {
    // balancer.rs fallbacks (retry targets for override-host): the pick, the next hosts
    // of its priority in round-robin order (wrapping), then healthy hosts of the
    // following priorities, at most `max`.
    let (b, _) = build(LbPolicy::RoundRobin, 0, &[3, 2, 1], &[3, 2, 1]);
    let mut out = Vec::new();
    b.fallbacks(pick_at(1, 0, false), 6, &mut out);
    assert_eq!(out, vec![1, 2, 0, 3, 4, 5]);
}

#[test]
fn fallbacks_stop_at_max() {
    // balancer.rs fallbacks: at most `max` entries.
    let (b, _) = build(LbPolicy::RoundRobin, 0, &[3, 2, 1], &[3, 2, 1]);
    let mut out = Vec::new();
    b.fallbacks(pick_at(1, 0, false), 2, &mut out);
    assert_eq!(out, vec![1, 2]);
    b.fallbacks(pick_at(0, 0, false), 4, &mut out);
    assert_eq!(out, vec![0, 1, 2, 3]);
    b.fallbacks(pick_at(2, 0, false), 1, &mut out);
    assert_eq!(out, vec![2]);
}

#[test]
fn fallbacks_skip_ejected_hosts() {
    // balancer.rs fallbacks: healthy hosts only (outside panic), in every priority.
    let sizes = [3, 3];
    let mut unhealthy = vec![false; 6];
    unhealthy[1] = true;
    unhealthy[3] = true;
    let mut rng = Rng::new(1);
    let mut b = Balancer::new(LbPolicy::RoundRobin, 0);
    b.rebuild(&ranking(&sizes), &unhealthy, &mut rng);
    let mut out = Vec::new();
    b.fallbacks(pick_at(2, 0, false), 5, &mut out);
    assert_eq!(out, vec![2, 0, 4, 5]);
}

#[test]
fn fallbacks_from_a_lower_priority_do_not_go_back_up() {
    // balancer.rs fallbacks: only the pick's priority and the following ones.
    let (b, _) = build(LbPolicy::RoundRobin, 0, &[2, 2, 1], &[2, 2, 1]);
    let mut out = Vec::new();
    b.fallbacks(pick_at(3, 1, false), 5, &mut out);
    assert_eq!(out, vec![3, 2, 4]);
}

#[test]
fn fallbacks_in_panic_use_all_hosts_of_the_priority() {
    // envoy load_balancer_impl.cc: a panicking priority uses all its hosts.
    let (b, _) = build(LbPolicy::RoundRobin, 50, &[3], &[0]);
    let mut out = Vec::new();
    b.fallbacks(pick_at(1, 0, true), 3, &mut out);
    assert_eq!(out, vec![1, 2, 0]);
}
