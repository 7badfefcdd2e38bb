//! `inventory.source: envoy` on the simulated host: one poller per Envoy
//! (the lease), the versioned publish every worker adopts, EDS changes, the
//! bad-answer cases (500, hang, huge, garbage, truncated), the own locality
//! inferred from Istio's priorities, and stateful-session steering.

use std::collections::BTreeMap;
use std::time::Duration;

use host_harness::sim::{lock, AdminAnswer, Behavior, RouterSteering, SimEnvoy};
use locality_failover::host::LogLevel;
use locality_failover::session;
use serde_json::{json, Value};

const CLUSTER: &str = "inbound-vip|8000|http|in-ambient.httpbin.svc.cluster.local";
const HEADER: &str = "x-locality-failover-session";
const PERIOD: Duration = Duration::from_secs(1);

/// One host of the simulated admin's answer.
struct H {
    ip: &'static str,
    zone: &'static str,
    priority: u32,
    health: &'static str,
    /// Behind an east-west gateway (`inner_connect_originate`, double HBONE).
    remote: bool,
}

const fn h(ip: &'static str, zone: &'static str, priority: u32) -> H {
    H {
        ip,
        zone,
        priority,
        health: "HEALTHY",
        remote: false,
    }
}

fn address(ip: &str) -> String {
    format!("envoy://connect_originate/{ip}:8080")
}

/// A `/config_dump?include_eds` answer in Envoy 1.40's shape (waypoint
/// endpoints: internal addresses, `istio.workload` metadata).
fn dump(hosts: &[H]) -> Vec<u8> {
    let mut groups: BTreeMap<(u32, &str), Vec<Value>> = BTreeMap::new();
    for x in hosts {
        let (listener, istio) = if x.remote {
            (
                "inner_connect_originate",
                json!({"workload": format!("ew-{};istio-system;ew;v1;Remote", x.ip),
                       "double_hbone": {"hbone_target_address": x.ip}}),
            )
        } else {
            (
                "connect_originate",
                json!({"workload": format!("pod-{};ns;httpbin;v1;Kubernetes", x.ip)}),
            )
        };
        groups.entry((x.priority, x.zone)).or_default().push(json!({
            "endpoint": {"address": {"envoy_internal_address":
                {"server_listener_name": listener, "endpoint_id": format!("{}:8080", x.ip)}}},
            "health_status": x.health,
            "metadata": {"filter_metadata": {"istio": istio}},
            "load_balancing_weight": 1
        }));
    }
    let endpoints: Vec<Value> = groups
        .into_iter()
        .map(|((priority, zone), lb)| {
            let region = &zone[..zone.len() - 1];
            json!({"locality": {"region": region, "zone": zone}, "priority": priority, "lb_endpoints": lb})
        })
        .collect();
    serde_json::to_vec_pretty(&json!({"configs": [{
        "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
        "dynamic_endpoint_configs": [{"version_info": "1", "endpoint_config": {
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": CLUSTER, "endpoints": endpoints}}]}]}))
    .unwrap()
}

/// The guide's DestinationRule: failover by region then zone.
fn config() -> Value {
    json!({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": true}},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}},
        "inventory": {"source": "envoy", "adminCluster": "prometheus_stats", "pollInterval": "1s"},
        "steering": {"mode": "stateful-session", "header": HEADER}})
}

/// The guide's hosts: the waypoint is in us-east-1a (priority 0 there).
fn guide() -> Vec<H> {
    vec![
        h("10.0.0.1", "us-east-1a", 0),
        h("10.0.0.2", "us-east-1b", 1),
        h("10.1.0.1", "us-west-2a", 2),
    ]
}

/// An Envoy whose node has no locality (off-cloud), serving `hosts`.
fn envoy(workers: usize, hosts: &[H]) -> SimEnvoy {
    envoy_with(workers, hosts, &config())
}

fn envoy_with(workers: usize, hosts: &[H], config: &Value) -> SimEnvoy {
    let mut e = SimEnvoy::new(
        workers,
        &BTreeMap::new(),
        config.to_string().into_bytes(),
        3,
        RouterSteering::StatefulSession {
            header: HEADER.into(),
            prefix: String::new(),
        },
    );
    let addresses: Vec<String> = hosts.iter().map(|x| address(x.ip)).collect();
    for a in &addresses {
        e.upstreams.insert(a.clone(), Behavior::Healthy);
    }
    e.set_cluster(CLUSTER, vec![], addresses);
    e.admin = Some(AdminAnswer::Reply {
        status: 200,
        body: dump(hosts),
    });
    assert!(e.configure());
    e
}

/// Routes one request (so the cluster is noted) and lets two periods pass.
fn warm(e: &mut SimEnvoy) {
    let first = e.request(&[]);
    assert_eq!(first.steering, None, "no inventory before the first poll");
    e.advance(PERIOD * 2);
}

/// The admin answers with `hosts` from now on; two poll periods pass.
fn publish(e: &mut SimEnvoy, hosts: &[H]) {
    e.admin = Some(AdminAnswer::Reply {
        status: 200,
        body: dump(hosts),
    });
    e.advance(PERIOD * 2);
}

fn picked(e: &mut SimEnvoy) -> String {
    let out = e.request(&[]);
    let value = out.steering.expect("the filter steers");
    session::decode(&value).expect("base64 of an address")
}

fn poll_errors(e: &SimEnvoy) -> i64 {
    lock(&e.shared).metric("locality_failover.inventory_poll_errors")
}

fn warnings_about(e: &SimEnvoy, needle: &str) -> usize {
    lock(&e.shared)
        .logs
        .iter()
        .filter(|(l, m)| *l == LogLevel::Warn && m.contains(needle))
        .count()
}

#[test]
fn one_worker_polls_for_the_whole_envoy_and_every_worker_adopts() {
    let mut e = envoy(4, &guide());
    warm(&mut e);
    e.advance(PERIOD * 5);
    let calls = lock(&e.shared).http_calls.clone();
    assert!(
        (6..=8).contains(&calls.len()),
        "about one poll per period over 7 periods, got {}",
        calls.len()
    );
    let pollers: std::collections::BTreeSet<_> = calls.iter().map(|c| c.worker).collect();
    assert_eq!(pollers.len(), 1, "one poller: {pollers:?}");
    for c in &calls {
        assert_eq!(c.method, "GET");
        assert_eq!(c.cluster, "prometheus_stats");
        assert!(
            c.path.starts_with("/config_dump?include_eds&mask=static_endpoint_configs,dynamic_endpoint_configs&name_regex=%5E%28inbound-vip%5C%7C8000%5C%7Chttp%5C%7Cin-ambient%5C.httpbin"),
            "{}",
            c.path
        );
    }
    for w in 0..4 {
        let root = e.root(w).unwrap();
        let engine = root.engine(CLUSTER).expect("every worker adopted");
        assert_eq!(engine.inventory().len(), 3);
    }
    for _ in 0..8 {
        assert_eq!(picked(&mut e), address("10.0.0.1"));
    }
}

#[test]
fn own_locality_is_inferred_from_priority_0() {
    let mut e = envoy(2, &guide());
    warm(&mut e);
    let labels = e.root(1).unwrap().own_labels().unwrap().clone();
    assert_eq!(
        labels
            .get("topology.kubernetes.io/region")
            .map(String::as_str),
        Some("us-east-1")
    );
    assert_eq!(
        labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("us-east-1a")
    );
    let logs = lock(&e.shared).logs.clone();
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("inferred from Istio's EDS priorities")),
        "{logs:?}"
    );
}

#[test]
fn priority_0_across_zones_gives_the_region_only() {
    let mut e = envoy(
        1,
        &[
            h("10.0.0.1", "us-east-1a", 0),
            h("10.0.0.2", "us-east-1b", 0),
        ],
    );
    warm(&mut e);
    let labels = e.root(0).unwrap().own_labels().unwrap().clone();
    assert_eq!(
        labels
            .get("topology.kubernetes.io/region")
            .map(String::as_str),
        Some("us-east-1")
    );
    assert_eq!(labels.get("topology.kubernetes.io/zone"), None);
}

#[test]
fn eds_changes_move_the_pick_within_two_periods() {
    let mut e = envoy(2, &guide());
    warm(&mut e);
    assert_eq!(picked(&mut e), address("10.0.0.1"));
    // The zone-local pod goes away (EDS removes it).
    let without = vec![
        h("10.0.0.2", "us-east-1b", 1),
        h("10.1.0.1", "us-west-2a", 2),
    ];
    publish(&mut e, &without);
    for _ in 0..4 {
        assert_eq!(picked(&mut e), address("10.0.0.2"));
    }
    // It comes back.
    publish(&mut e, &guide());
    for _ in 0..4 {
        assert_eq!(picked(&mut e), address("10.0.0.1"));
    }
}

#[test]
fn a_host_envoy_holds_unhealthy_is_no_candidate() {
    let mut e = envoy(1, &guide());
    warm(&mut e);
    let mut hosts = guide();
    hosts[0].health = "UNHEALTHY";
    publish(&mut e, &hosts);
    let engine = e.root(0).unwrap().engine(CLUSTER).unwrap();
    assert_eq!(
        engine.inventory().len(),
        3,
        "kept in the host count, as in Envoy"
    );
    for _ in 0..6 {
        assert_eq!(picked(&mut e), address("10.0.0.2"));
    }
}

/// Each bad answer: requests keep flowing on the last good inventory, the
/// counter counts every failed poll, one log line per condition.
fn keeps_last_good(bad: AdminAnswer, needle: &str) -> SimEnvoy {
    let mut e = envoy(2, &guide());
    warm(&mut e);
    assert_eq!(poll_errors(&e), 0);
    e.admin = Some(bad);
    e.advance(PERIOD * 5);
    for _ in 0..4 {
        assert_eq!(picked(&mut e), address("10.0.0.1"), "last good inventory");
    }
    assert!(
        poll_errors(&e) >= 2,
        "every failed poll counts: {}",
        poll_errors(&e)
    );
    assert_eq!(
        warnings_about(&e, needle),
        1,
        "one log line: {:?}",
        lock(&e.shared).logs
    );
    e
}

#[test]
fn admin_answering_500_keeps_the_last_good_inventory() {
    keeps_last_good(
        AdminAnswer::Reply {
            status: 500,
            body: b"oops".to_vec(),
        },
        "the admin answered 500",
    );
}

#[test]
fn admin_hanging_keeps_the_last_good_inventory() {
    let e = keeps_last_good(
        AdminAnswer::Hang,
        "no answer from cluster \"prometheus_stats\"",
    );
    let calls = lock(&e.shared).http_calls.clone();
    assert!(calls.iter().all(|c| c.timeout == PERIOD), "default timeout");
}

#[test]
fn a_50_mb_answer_is_dropped_unread() {
    let mut huge = b"{\"configs\": [".to_vec();
    huge.resize(50 * 1024 * 1024, b' ');
    let e = keeps_last_good(
        AdminAnswer::Reply {
            status: 200,
            body: huge,
        },
        "more than maxResponseBytes",
    );
    let read = lock(&e.shared).calls.call_body_bytes_read;
    assert!(read < 1024 * 1024, "the body was read ({read} bytes)");
}

#[test]
fn garbage_and_truncated_answers_keep_the_last_good_inventory() {
    keeps_last_good(
        AdminAnswer::Reply {
            status: 200,
            body: b"<html>not json</html>".to_vec(),
        },
        "unreadable admin answer",
    );
    let good = dump(&guide());
    keeps_last_good(
        AdminAnswer::Reply {
            status: 200,
            body: good[..good.len() / 2].to_vec(),
        },
        "unreadable admin answer",
    );
}

#[test]
fn a_call_that_cannot_be_sent_is_counted_and_logged_once() {
    keeps_last_good(
        AdminAnswer::Refuse,
        "cannot call cluster \"prometheus_stats\"",
    );
}

#[test]
fn recovery_is_logged_and_the_new_answer_adopted() {
    let mut e = keeps_last_good(
        AdminAnswer::Reply {
            status: 503,
            body: vec![],
        },
        "the admin answered 503",
    );
    e.admin = Some(AdminAnswer::Reply {
        status: 200,
        body: dump(&[h("10.0.0.2", "us-east-1b", 1)]),
    });
    e.advance(PERIOD * 2);
    let logs = lock(&e.shared).logs.clone();
    assert!(logs
        .iter()
        .any(|(_, m)| m.contains("the admin answers again")));
    assert_eq!(picked(&mut e), address("10.0.0.2"));
}

#[test]
fn a_lease_held_elsewhere_stops_polling_until_it_expires() {
    let mut e = envoy(2, &guide());
    // Another VM (say, one that stopped) holds the lease for 3 more seconds.
    let until = e.now() + 3_000_000_000;
    let mut lease = 42u64.to_le_bytes().to_vec();
    lease.extend_from_slice(&until.to_le_bytes());
    lock(&e.shared).put("locality-failover/@envoy/lease", &lease);
    e.request(&[]);
    e.advance(Duration::from_millis(2900));
    assert!(lock(&e.shared).http_calls.is_empty(), "the lease holds");
    e.advance(PERIOD * 2);
    assert!(
        !lock(&e.shared).http_calls.is_empty(),
        "taken over after expiry"
    );
    assert_eq!(picked(&mut e), address("10.0.0.1"));
}

#[test]
fn a_client_session_header_never_picks_the_upstream() {
    let mut e = envoy(1, &guide());
    // Before any inventory (passthrough) and after, a client value naming
    // another host (or a rogue one) is removed.
    let rogue = {
        let mut v = String::new();
        session::encode_into("", &address("10.1.0.1"), &mut v);
        v
    };
    let out = e.request(&[(HEADER, rogue.as_str())]);
    assert_eq!(
        out.steering, None,
        "the client's value never reaches the router"
    );
    e.advance(PERIOD * 2);
    for _ in 0..5 {
        let out = e.request(&[(HEADER, rogue.as_str())]);
        assert_eq!(
            session::decode(out.steering.as_deref().unwrap()),
            Some(address("10.0.0.1"))
        );
        assert_eq!(out.attempts, vec![address("10.0.0.1")]);
    }
    // No counter: the filter never reads the client's header (its own write
    // replaces every value, and a request it does not steer gets a remove).
}

#[test]
fn configuration_reference_defaults() {
    let s = locality_failover::config::Settings::from_bytes(
        br#"{"inventory": {"source": "envoy"}, "steering": {"mode": "stateful-session"}}"#,
    )
    .unwrap();
    let locality_failover::config::InventorySource::Envoy(src) = s.inventory else {
        panic!("envoy source");
    };
    assert_eq!(src.admin_cluster, "prometheus_stats");
    assert_eq!(src.poll_interval, Duration::from_secs(1));
    assert_eq!(src.timeout, Duration::from_secs(1), "the poll interval");
    assert_eq!(src.max_response_bytes, 4 * 1024 * 1024);
    assert!(src.clusters.is_empty());
    assert_eq!(s.steering.header, HEADER);
}

#[test]
fn a_retried_session_request_counts_against_the_pick() {
    let mut e = envoy(1, &guide());
    e.retry = Some(host_harness::sim::RetryPolicy {
        attempts: 2,
        retry_on: vec!["5xx".into()],
    });
    warm(&mut e);
    e.upstreams.insert(address("10.0.0.1"), Behavior::Http(503));
    // Each request: the pick answers 503, Envoy's retry goes to its
    // balancer (another host answers 200): the client sees 200, the filter
    // counts a failure of its pick and ejects it after 5.
    for _ in 0..5 {
        let out = e.request(&[]);
        assert_eq!(out.status, 200);
        assert_eq!(out.attempts.first(), Some(&address("10.0.0.1")));
    }
    assert_eq!(lock(&e.shared).metric("locality_failover.ejections"), 1);
    assert_eq!(lock(&e.shared).metric("locality_failover.retried"), 5);
    assert_eq!(picked(&mut e), address("10.0.0.2"));
}

#[test]
fn an_unchanged_answer_is_not_published_again() {
    let mut e = envoy(2, &guide());
    warm(&mut e);
    let version = |e: &SimEnvoy| {
        let s = lock(&e.shared);
        let v = s.get("locality-failover/@envoy/version").unwrap();
        u64::from_le_bytes(v.try_into().unwrap())
    };
    assert_eq!(version(&e), 1);
    e.advance(PERIOD * 5);
    assert!(lock(&e.shared).http_calls.len() >= 6);
    assert_eq!(version(&e), 1, "same hosts: same version");
    e.admin = Some(AdminAnswer::Reply {
        status: 200,
        body: dump(&guide()[1..]),
    });
    e.advance(PERIOD * 2);
    assert_eq!(version(&e), 2);
}

#[test]
fn no_common_region_at_priority_0_is_logged_as_unknown() {
    let mut e = envoy(
        2,
        &[
            h("10.0.0.1", "us-east-1a", 0),
            h("10.1.0.1", "us-west-2a", 0),
        ],
    );
    warm(&mut e);
    let labels = e.root(0).unwrap().own_labels().unwrap().clone();
    assert_eq!(labels.get("topology.kubernetes.io/region"), None);
    assert_eq!(
        warnings_about(&e, "own locality is unknown"),
        1,
        "once per Envoy"
    );
}

#[test]
fn remote_network_hosts_rank_as_another_network() {
    // A remote-network gateway in the proxy's own zone, a local pod in
    // another region; the default ranking (PreferNetwork) keeps the local
    // network first, then the remote one.
    let mut remote = h("10.9.0.1", "us-east-1a", 0);
    remote.remote = true;
    let far_local = h("10.1.0.1", "us-west-2a", 1);
    let mut e = SimEnvoy::new(
        1,
        &BTreeMap::new(),
        json!({"inventory": {"source": "envoy"}, "steering": {"mode": "stateful-session"},
               "locality": {"region": "us-east-1", "zone": "us-east-1a"}})
        .to_string()
        .into_bytes(),
        3,
        RouterSteering::StatefulSession {
            header: HEADER.into(),
            prefix: String::new(),
        },
    );
    let remote_address = "envoy://inner_connect_originate/10.9.0.1:8080".to_string();
    for a in [remote_address.clone(), address("10.1.0.1")] {
        e.upstreams.insert(a, Behavior::Healthy);
    }
    e.set_cluster(
        CLUSTER,
        vec![],
        vec![remote_address.clone(), address("10.1.0.1")],
    );
    e.admin = Some(AdminAnswer::Reply {
        status: 200,
        body: dump(&[remote, far_local]),
    });
    assert!(e.configure());
    warm(&mut e);
    let engine = e.root(0).unwrap().engine(CLUSTER).unwrap();
    let remote_endpoint = engine
        .inventory()
        .endpoints()
        .iter()
        .find(|x| x.address == remote_address)
        .unwrap();
    assert_eq!(
        remote_endpoint.label("topology.istio.io/network"),
        locality_failover::admin::REMOTE_NETWORK
    );
    assert_eq!(remote_endpoint.label("topology.istio.io/cluster"), "Remote");
    for _ in 0..4 {
        assert_eq!(picked(&mut e), address("10.1.0.1"));
    }
}

#[test]
fn a_new_inventory_keeps_the_filters_ejections_from_its_first_request() {
    let mut e = envoy(1, &guide());
    warm(&mut e);
    e.upstreams.insert(address("10.0.0.1"), Behavior::Http(503));
    for _ in 0..5 {
        assert_eq!(picked(&mut e), address("10.0.0.1"));
    }
    assert_eq!(picked(&mut e), address("10.0.0.2"), "ejected after 5 x 503");
    // EDS adds a pod; the poll's answer is adopted right after a tick, and
    // the next request comes before any later refresh of the ejection view.
    let mut more = guide();
    more.push(h("10.1.0.2", "us-west-2b", 2));
    publish(&mut e, &more);
    assert_eq!(
        e.root(0)
            .unwrap()
            .engine(CLUSTER)
            .unwrap()
            .inventory()
            .len(),
        4,
        "the new inventory is in force"
    );
    for _ in 0..4 {
        assert_eq!(
            picked(&mut e),
            address("10.0.0.2"),
            "10.0.0.1 stays ejected"
        );
    }
}

#[test]
fn the_declarations_spare_both_property_reads_here_too() {
    let reads = |e: &SimEnvoy, path: &str| lock(&e.shared).property_paths.get(path).copied();
    let mut declared = config();
    declared["inventory"]["cluster"] = json!(CLUSTER);
    declared["steering"]["attemptCount"] = json!("responseHeader");
    // Declared: one cluster-name read, the check after warm-up's ticks.
    for (config, want) in [(config(), (20, 20)), (declared, (1, 0))] {
        let mut e = envoy_with(1, &guide(), &config);
        warm(&mut e);
        let before = (
            reads(&e, "xds.cluster_name").unwrap_or(0),
            reads(&e, "upstream.request_attempt_count").unwrap_or(0),
        );
        for _ in 0..20 {
            assert_eq!(picked(&mut e), address("10.0.0.1"));
        }
        let after = (
            reads(&e, "xds.cluster_name").unwrap_or(0),
            reads(&e, "upstream.request_attempt_count").unwrap_or(0),
        );
        assert_eq!((after.0 - before.0, after.1 - before.1), want, "{config}");
    }
}

#[test]
fn a_pick_envoy_did_not_honour_credits_the_host_that_served() {
    let mut cfg = config();
    cfg["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] = json!(2);
    let mut e = envoy_with(1, &guide(), &cfg);
    // Not steered (no inventory yet): Envoy's session filter names the host
    // it chose on the response; the client never sees it.
    let first = e.request(&[]);
    assert_eq!(first.steering, None);
    assert!(!first.response_headers.contains_key(HEADER), "{first:?}");
    e.advance(PERIOD * 2);
    // Envoy no longer has the pick (an EDS change the filter has not
    // polled yet; or a host Envoy's own detector ejected): its session
    // filter falls back to the balancer, here the one other host.
    let (a, b) = (address("10.0.0.1"), address("10.0.0.2"));
    e.set_cluster(CLUSTER, vec![], vec![b.clone()]);
    let send = |e: &mut SimEnvoy, behavior: Behavior| {
        e.upstreams.insert(b.clone(), behavior);
        let out = e.request(&[]);
        assert_eq!(
            session::decode(out.steering.as_deref().unwrap()),
            Some(a.clone())
        );
        assert_eq!(out.attempts, vec![b.clone()], "Envoy served it elsewhere");
        assert!(!out.response_headers.contains_key(HEADER), "{out:?}");
        out.status
    };
    // b fails, succeeds, fails: two 5xx, not consecutive. Credited to the
    // pick, the success would have left b's streak at 1 and the second
    // failure would eject b.
    assert_eq!(send(&mut e, Behavior::Http(503)), 503);
    assert_eq!(send(&mut e, Behavior::Healthy), 200);
    assert_eq!(send(&mut e, Behavior::Http(503)), 503);
    assert_eq!(lock(&e.shared).metric("locality_failover.ejections"), 0);
    assert_eq!(send(&mut e, Behavior::Http(503)), 503);
    assert_eq!(
        lock(&e.shared).metric("locality_failover.ejections"),
        1,
        "two consecutive 5xx do eject b"
    );
}

#[test]
fn a_cap_that_cannot_eject_is_said_when_the_endpoint_count_changes() {
    let mut cfg = config();
    cfg["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] = json!(30);
    let mut e = envoy_with(1, &guide(), &cfg);
    warm(&mut e);
    let cap = "maxEjectionPercent";
    // 3 hosts: one ejection is 33% > 30%.
    assert_eq!(warnings_about(&e, cap), 1, "{:?}", lock(&e.shared).logs);
    // A health change keeps the count: nothing new.
    let mut hosts = guide();
    hosts[0].health = "UNHEALTHY";
    publish(&mut e, &hosts);
    e.request(&[]);
    assert_eq!(warnings_about(&e, cap), 1);
    // A fourth host: 25% passes; back to 3: said again.
    let mut four = guide();
    four.push(h("10.0.0.3", "us-east-1a", 0));
    for (hosts, said) in [(four, 1), (guide(), 2)] {
        publish(&mut e, &hosts);
        e.request(&[]);
        assert_eq!(warnings_about(&e, cap), said);
    }
}
