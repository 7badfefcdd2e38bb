//! The `envoy` inventory source and `stateful-session` steering on the real
//! Envoy 1.40: the filter reads the EDS cluster's hosts from Envoy's own
//! admin through a static cluster (as `prometheus_stats` on a waypoint),
//! follows EDS changes within two poll periods, survives a failing admin
//! (500, hang, 50 MB) on its last good inventory, and a client-sent session
//! header never picks the upstream. Plus Envoy's own session-filter
//! behaviour the filter relies on (retries, unhealthy picks, strict).
//! Skips (printing SKIP) when `envoy` is not installed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use host_harness::envoy::config::Layout;
use host_harness::envoy::{
    envoy_binary, http_get, EnvoyOptions, EnvoyProcess, TempDir, UpstreamState, Upstreams,
    WasmFilter,
};
use locality_failover::session;
use serde_json::{json, Value};

// Only `wasm()` is used here.
#[allow(dead_code)]
mod common;
use common::wasm;

const CLUSTER: &str = "inbound-vip|8000|http|svc";
const HEADER: &str = "x-locality-failover-session";
const PERIOD: Duration = Duration::from_millis(500);
const T: Duration = Duration::from_secs(10);
const CLA: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// What the stand-in admin (cluster `fake_admin`) does with a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admin {
    /// Forwards to the real admin.
    Forward,
    Status500,
    Hang,
    /// 200 with a 50 MB body.
    Huge,
    /// 200 with a 6 MB body: over the filter's default cap (4 MiB), under Envoy's.
    Big,
}

struct FakeAdmin {
    mode: Arc<Mutex<Admin>>,
    real: Arc<Mutex<Option<SocketAddr>>>,
    paths: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl FakeAdmin {
    fn start() -> FakeAdmin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = FakeAdmin {
            mode: Arc::new(Mutex::new(Admin::Forward)),
            real: Arc::new(Mutex::new(None)),
            paths: Arc::new(Mutex::new(Vec::new())),
            addr,
        };
        let (mode, real, paths) = (fake.mode.clone(), fake.real.clone(), fake.paths.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (mode, real, paths) = (mode.clone(), real.clone(), paths.clone());
                std::thread::spawn(move || serve(conn, &mode, &real, &paths));
            }
        });
        fake
    }

    fn set(&self, mode: Admin) {
        *self.mode.lock().unwrap() = mode;
    }

    fn polls(&self) -> usize {
        self.paths.lock().unwrap().len()
    }
}

fn serve(
    conn: TcpStream,
    mode: &Mutex<Admin>,
    real: &Mutex<Option<SocketAddr>>,
    paths: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        paths.lock().unwrap().push(format!(
            "{} {path}",
            line.split_whitespace().next().unwrap_or("")
        ));
        let current = *mode.lock().unwrap();
        let (status, body) = match current {
            Admin::Forward => {
                let admin = real.lock().unwrap().expect("real admin");
                let r = http_get(admin, &path, &[], T).expect("real admin answers");
                (r.status, r.body)
            }
            Admin::Status500 => (500, b"boom".to_vec()),
            Admin::Hang => {
                std::thread::sleep(Duration::from_secs(20));
                return;
            }
            Admin::Huge | Admin::Big => {
                let mut b = b"{\"configs\": [".to_vec();
                let mb = if current == Admin::Huge { 50 } else { 6 };
                b.resize(mb * 1024 * 1024, b' ');
                (200, b)
            }
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(&body))
            .is_err()
        {
            return;
        }
    }
}

struct Rig {
    envoy: EnvoyProcess,
    ups: Upstreams,
    fake: FakeAdmin,
    internal: bool,
    _dir: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn socket(addr: SocketAddr) -> Value {
    json!({"address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}})
}

fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
           "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": socket(addr)}]}]}})
}

/// `(upstream, region/zone, priority)` as EDS sends them: socket
/// addresses, or (`internal`) a waypoint's internal addresses
/// `connect_originate/<ip:port>` with Istio's tunnel metadata.
fn load_assignment(ups: &Upstreams, internal: bool, hosts: &[(&str, &str, u32)]) -> Value {
    let endpoints: Vec<Value> = hosts
        .iter()
        .map(|(name, locality, priority)| {
            let (region, zone) = locality.split_once('/').expect("region/zone");
            let addr = ups.addr(name).expect("addr");
            let workload = json!({"workload": format!("{name};ns;svc;v1;Kubernetes")});
            let lb = if internal {
                json!({"endpoint": {"address": {"envoy_internal_address": {
                        "server_listener_name": "connect_originate", "endpoint_id": addr.to_string()}}},
                       "metadata": {"filter_metadata": {"istio": workload,
                        "envoy.filters.listener.original_dst": {"local": addr.to_string()}}}})
            } else {
                json!({"endpoint": socket(addr), "metadata": {"filter_metadata": {"istio": workload}}})
            };
            json!({"locality": {"region": region, "zone": zone}, "priority": priority, "lb_endpoints": [lb]})
        })
        .collect();
    json!({"cluster_name": CLUSTER, "endpoints": endpoints})
}

/// The guide's layout: the proxy (no node locality) is in us-east-1a,
/// which Istio put at priority 0.
const GUIDE: &[(&str, &str, u32)] = &[
    ("a", "us-east-1/us-east-1a", 0),
    ("b", "us-east-1/us-east-1b", 1),
    ("c", "us-west-2/us-west-2a", 2),
];

fn rig(admin_cluster: &str, concurrency: u32) -> Option<Rig> {
    rig_shaped(admin_cluster, concurrency, Shape::default())
}

/// How a test's Envoy differs from the default one.
#[derive(Default)]
struct Shape {
    /// The cluster is shaped like a waypoint's `inbound-vip`
    /// (internal-address endpoints through a `connect_originate` internal
    /// listener that forwards plain TCP to the upstream; a real waypoint
    /// opens an HBONE tunnel there).
    internal: bool,
    /// The route does not retry (default: 2 retries on 5xx).
    no_retries: bool,
    /// The plugin's `outlierDetection` (default: 5 consecutive 5xx).
    filter_outlier: Option<Value>,
    /// The EDS cluster's own `outlier_detection` (default: none).
    envoy_outlier: Option<Value>,
    /// The filter's admin poll period (default: [`PERIOD`]).
    poll_interval: Option<&'static str>,
}

fn rig_shaped(admin_cluster: &str, concurrency: u32, shape: Shape) -> Option<Rig> {
    let internal = shape.internal;
    if envoy_binary().is_none() {
        eprintln!("SKIP: envoy not on PATH");
        return None;
    }
    let ups = Upstreams::start(&["a", "b", "c", "d", "rogue"]).expect("upstreams");
    let fake = FakeAdmin::start();
    let dir = TempDir::new("session").expect("temp dir");
    let layout = Layout::new(dir.path());
    std::fs::create_dir_all(layout.xds_dir()).expect("xds dir");
    let mut resource = load_assignment(&ups, internal, GUIDE);
    resource["@type"] = json!(CLA);
    let eds = json!({"version_info": "0", "resources": [resource]});
    std::fs::write(layout.eds(), eds.to_string()).expect("eds file");
    let plugin = json!({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": true}},
            "outlierDetection": shape.filter_outlier.unwrap_or_else(|| json!(
                {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}))},
        "inventory": {"source": "envoy", "adminCluster": admin_cluster, "pollInterval": shape.poll_interval.unwrap_or("500ms"), "timeout": "400ms"},
        "steering": {"mode": "stateful-session", "header": HEADER}});
    let admin_port = free_port();
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "main",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
            "route": {"cluster": CLUSTER, "retry_policy": {"retry_on": "5xx", "num_retries": 2,
                // As Istio writes it: a retry avoids the hosts already tried.
                "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                "host_selection_retry_max_attempts": 5}}}]}]},
        "http_filters": [
            WasmFilter::new(wasm(), plugin.to_string()).to_json(),
            {"name": "envoy.filters.http.stateful_session", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
                "session_state": {"name": "envoy.http.stateful_session.header", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState",
                    "name": HEADER}}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]});
    let mut eds_cluster = json!({"name": CLUSTER, "type": "EDS", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
        "eds_cluster_config": {"eds_config": {"path_config_source": {"path": layout.eds()}, "resource_api_version": "V3"}}});
    if let Some(od) = shape.envoy_outlier {
        eds_cluster["outlier_detection"] = od;
    }
    let mut hcm = hcm;
    if shape.no_retries {
        hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
            .as_object_mut()
            .expect("route")
            .remove("retry_policy");
    }
    let mut listeners = vec![
        json!({"name": "ingress", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}),
    ];
    let mut clusters = vec![
        static_cluster(
            "prometheus_stats",
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
        ),
        static_cluster("fake_admin", fake.addr),
    ];
    if internal {
        eds_cluster["transport_socket"] = json!({"name": "envoy.transport_sockets.internal_upstream", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport",
            "passthrough_metadata": [{"kind": {"host": {}}, "name": "envoy.filters.listener.original_dst"}],
            "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}});
        listeners.push(json!({"name": "connect_originate", "internal_listener": {},
            "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "connect_originate", "cluster": "orig"}}]}]}));
        clusters.push(json!({"name": "orig", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"}));
    }
    clusters.insert(0, eds_cluster);
    let bootstrap = json!({
    "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
    "node": {"id": "waypoint", "cluster": "waypoint"},
    "static_resources": {"listeners": listeners, "clusters": clusters}});
    std::fs::write(layout.bootstrap(), bootstrap.to_string()).expect("bootstrap");
    let opts = EnvoyOptions {
        concurrency,
        ..EnvoyOptions::default()
    };
    let envoy =
        EnvoyProcess::spawn(&layout, &opts).unwrap_or_else(|e| panic!("envoy did not start: {e}"));
    *fake.real.lock().unwrap() = Some(envoy.admin_addr());
    Some(Rig {
        envoy,
        ups,
        fake,
        internal,
        _dir: dir,
    })
}

impl Rig {
    /// One request; the upstream that answered and the session value it got.
    fn get(&self, headers: &[(&str, &str)]) -> (u16, String) {
        let listener = self.envoy.listener().expect("listener");
        let r = http_get(listener, "/", headers, T)
            .unwrap_or_else(|e| panic!("request failed: {e}\n{}", self.envoy.log_tail(30)));
        (r.status, r.text().trim().to_string())
    }

    /// The host the filter named in the last request `name` received.
    fn session_seen_by(&self, name: &str) -> Option<String> {
        let last = self.ups.requests(name).pop()?;
        session::decode(last.header(HEADER)?)
    }

    /// The upstream's address as Envoy keys the host.
    fn addr(&self, name: &str) -> String {
        let addr = self.ups.addr(name).expect("addr");
        if self.internal {
            format!("envoy://connect_originate/{addr}")
        } else {
            addr.to_string()
        }
    }

    /// Writes the EDS file (atomically, as Envoy's path watch expects) and
    /// waits until Envoy accepted it. (`EnvoyProcess::apply_load_assignment`
    /// would also compare `/clusters` with socket addresses only.)
    fn apply_eds(&self, cla: &Value, timeout: Duration) -> Result<(), String> {
        let stat = format!("cluster.{CLUSTER}.update_success");
        let before = self.envoy.stat(&stat).unwrap_or(0);
        let mut resource = cla.clone();
        resource["@type"] = json!(CLA);
        let body = json!({"version_info": format!("v{before}"), "resources": [resource]});
        let path = self.envoy.layout().eds();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body.to_string()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        if self
            .envoy
            .wait_for(timeout, |e| e.stat(&stat).unwrap_or(0) > before)
        {
            Ok(())
        } else {
            Err(format!("{stat} did not move"))
        }
    }

    fn eds(&self, hosts: &[(&str, &str, u32)]) -> Value {
        load_assignment(&self.ups, self.internal, hosts)
    }

    /// Sends requests until one is answered by `name` with the filter's
    /// session value naming it; returns how long that took.
    fn until_steered_to(&self, name: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let (_, body) = self.get(&[]);
            if body == name && self.session_seen_by(name) == Some(self.addr(name)) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn metric(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.locality_failover.{name}"))
            .unwrap_or(0)
    }

    fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.envoy.layout().envoy_log())
            .unwrap_or_default()
            .matches(needle)
            .count()
    }
}

#[test]
fn the_filter_reads_envoys_admin_and_follows_eds() {
    if let Some(rig) = rig("prometheus_stats", 2) {
        follows_eds(&rig);
    }
}

/// As on a waypoint: internal-address endpoints, steered by
/// `base64("envoy://connect_originate/<ip:port>")`.
#[test]
fn internal_address_endpoints_are_steered_and_followed() {
    let internal = Shape {
        internal: true,
        ..Shape::default()
    };
    if let Some(rig) = rig_shaped("prometheus_stats", 2, internal) {
        follows_eds(&rig);
    }
}

fn follows_eds(rig: &Rig) {
    // The first request notes the cluster; the next poll reads it.
    assert!(
        rig.until_steered_to("a", Duration::from_secs(5)).is_some(),
        "never steered to the priority-0 host\n{}",
        rig.envoy.log_tail(30)
    );
    // Every worker adopts on its next tick.
    std::thread::sleep(PERIOD);
    for _ in 0..6 {
        assert_eq!(rig.get(&[]).1, "a");
    }
    assert_eq!(rig.session_seen_by("a"), Some(rig.addr("a")));
    assert!(
        rig.log_count("inferred from Istio's EDS priorities") == 1,
        "{}",
        rig.envoy.log_tail(30)
    );
    // EDS removes a: the filter's pick moves to b (same region) within two periods.
    let without_a = rig.eds(&[GUIDE[1], GUIDE[2]]);
    rig.apply_eds(&without_a, T).expect("EDS applied");
    let took = rig
        .until_steered_to("b", PERIOD * 4)
        .expect("pick moved to b");
    eprintln!("pick moved after {took:?} (period {PERIOD:?})");
    assert!(
        took <= PERIOD * 2 + Duration::from_millis(300),
        "took {took:?}"
    );
    // EDS adds d in the proxy's zone: the pick moves there.
    let with_d = rig.eds(&[("d", "us-east-1/us-east-1a", 0), GUIDE[1], GUIDE[2]]);
    rig.apply_eds(&with_d, T).expect("EDS applied");
    let took = rig
        .until_steered_to("d", PERIOD * 4)
        .expect("pick moved to d");
    eprintln!("pick moved after {took:?} (period {PERIOD:?})");
    assert!(
        took <= PERIOD * 2 + Duration::from_millis(300),
        "took {took:?}"
    );
    assert_eq!(rig.metric("inventory_poll_errors"), 0);
}

#[test]
fn a_failing_admin_changes_nothing_but_a_counter_and_a_log_line() {
    let Some(rig) = rig("fake_admin", 2) else {
        return;
    };
    assert!(
        rig.until_steered_to("a", Duration::from_secs(5)).is_some(),
        "{}",
        rig.envoy.log_tail(30)
    );
    std::thread::sleep(PERIOD);
    let polls = rig.fake.polls();
    std::thread::sleep(PERIOD * 6);
    let per_period = (rig.fake.polls() - polls) as f64 / 6.0;
    assert!(
        (0.5..=1.5).contains(&per_period),
        "one poller per Envoy (2 workers + main): {per_period} polls per period"
    );
    assert!(rig
        .fake
        .paths
        .lock()
        .unwrap()
        .iter()
        .all(|p| p.starts_with("GET /config_dump?include_eds&mask=")));
    for (mode, needle) in [
        (Admin::Status500, "the admin answered 500"),
        (
            Admin::Hang,
            "no answer from cluster \"fake_admin\" within 400ms",
        ),
        (Admin::Big, "more than maxResponseBytes 4194304"),
        // Under load Envoy reports a 50 MB answer either way (dropped over
        // its buffer, or a timeout while it streams): one class, one line.
        (Admin::Huge, "answer from cluster \"fake_admin\""),
    ] {
        let errors = rig.metric("inventory_poll_errors");
        let lines_before = rig.log_count(needle);
        rig.fake.set(mode);
        let start = Instant::now();
        while start.elapsed() < PERIOD * 6 {
            let (status, body) = rig.get(&[]);
            assert_eq!((status, body.as_str()), (200, "a"), "{mode:?}");
            assert_eq!(rig.session_seen_by("a"), Some(rig.addr("a")), "{mode:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            rig.metric("inventory_poll_errors") >= errors + 2,
            "{mode:?}: counted"
        );
        let lines = rig.log_count(needle) - lines_before;
        assert!(
            lines == 1,
            "{mode:?}: {lines} log lines\n{}",
            rig.envoy.log_tail(20)
        );
        rig.fake.set(Admin::Forward);
        std::thread::sleep(PERIOD * 2);
    }
}

#[test]
fn a_client_session_header_never_picks_the_upstream() {
    let Some(rig) = rig("prometheus_stats", 1) else {
        return;
    };
    let encode = |name: &str| {
        let mut v = String::new();
        session::encode_into("", &rig.addr(name), &mut v);
        v
    };
    // Before the filter has an inventory and after.
    let rogue = encode("rogue");
    let (_, body) = rig.get(&[(HEADER, &rogue)]);
    assert_ne!(body, "rogue");
    assert!(rig.until_steered_to("a", Duration::from_secs(5)).is_some());
    std::thread::sleep(PERIOD);
    for name in ["rogue", "b", "c"] {
        for _ in 0..4 {
            let (status, body) = rig.get(&[(HEADER, &encode(name))]);
            assert_eq!((status, body.as_str()), (200, "a"), "client named {name}");
        }
    }
    assert_eq!(
        rig.ups.answered("rogue"),
        0,
        "a client-chosen address was reached"
    );
    assert_eq!(
        rig.ups.answered("b") + rig.ups.answered("c"),
        0,
        "a client-chosen endpoint was reached"
    );
    // No counter to check: the filter never reads the client's header (its
    // own write replaces every value), so what reached whom is the proof.
}

#[test]
fn a_retried_session_request_leaves_the_pick() {
    let Some(rig) = rig("prometheus_stats", 1) else {
        return;
    };
    assert!(rig.until_steered_to("a", Duration::from_secs(5)).is_some());
    // One priority for Envoy (the filter still ranks a first: its own
    // locality was settled from the first answer), so the retry can leave a.
    let flat = rig.eds(&[
        ("a", "us-east-1/us-east-1a", 0),
        ("b", "us-east-1/us-east-1b", 0),
        ("c", "us-west-2/us-west-2a", 0),
    ]);
    rig.apply_eds(&flat, T).expect("EDS applied");
    std::thread::sleep(PERIOD * 3);
    rig.ups.set("a", UpstreamState::Http(503)).expect("set");
    rig.ups.reset_counts();
    let (status, body) = rig.get(&[]);
    // Envoy 1.40: the first attempt goes to the session host, the retry to
    // the cluster's balancer (the session host was already tried).
    assert_eq!(status, 200, "retried elsewhere");
    assert_ne!(body, "a");
    assert_eq!(rig.ups.answered("a"), 1, "the pick had the first attempt");
    assert_eq!(rig.metric("retried"), 1, "the filter saw the retry");
}

#[test]
fn a_pick_envoy_did_not_honour_credits_the_host_that_served() {
    // The filter returns a from ejection after 1 s; Envoy's own detector
    // (the DestinationRule's, on the cluster) keeps it out for 10 min, so
    // Envoy's session filter refuses the filter's pick and its balancer
    // sends the request to b. No retries: one attempt each. Envoy's admin
    // reports a host its detector ejected as UNHEALTHY (seen here on 1.40),
    // which the filter's next poll adopts: that window lasts up to one
    // poll period, made longer than the test here.
    let shape = Shape {
        poll_interval: Some("60s"),
        no_retries: true,
        filter_outlier: Some(json!({"consecutive5xxErrors": 2, "interval": "1s",
            "baseEjectionTime": "1s", "maxEjectionPercent": 100})),
        envoy_outlier: Some(json!({"consecutive_5xx": 2, "interval": "60s",
            "base_ejection_time": "600s", "max_ejection_percent": 50})),
        ..Shape::default()
    };
    let Some(rig) = rig_shaped("prometheus_stats", 1, shape) else {
        return;
    };
    assert!(rig.until_steered_to("a", Duration::from_secs(5)).is_some());
    rig.ups.set("a", UpstreamState::Http(503)).expect("set");
    for _ in 0..2 {
        assert_eq!(rig.get(&[]), (503, "a 503".to_string()));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rig.metric("ejections"), 1, "the filter ejected a");
    rig.ups.set("a", UpstreamState::Healthy).expect("set");
    // The filter's sweep returns a (its streaks reset) within 2 s; Envoy
    // keeps it out: b serves requests that name a.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.session_seen_by("b") != Some(rig.addr("a")) {
        assert!(Instant::now() < deadline, "the filter never picked a again");
        assert_eq!(rig.get(&[]), (200, "b".to_string()), "Envoy keeps a out");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listener = rig.envoy.listener().expect("listener");
    let send = |behavior: UpstreamState| {
        rig.ups.set("b", behavior).expect("set");
        let r = http_get(listener, "/", &[], T).expect("request");
        assert!(r.text().starts_with('b'), "Envoy's balancer served it");
        assert_eq!(
            rig.session_seen_by("b"),
            Some(rig.addr("a")),
            "the filter picked a"
        );
        assert_eq!(
            r.header(HEADER),
            None,
            "the client never sees a host address"
        );
        std::thread::sleep(Duration::from_millis(50));
        r.status
    };
    // b fails, succeeds, fails: two 5xx, not consecutive. Credited to the
    // pick, the success would leave b's streak at 1 and the second failure
    // would eject b.
    assert_eq!(send(UpstreamState::Http(503)), 503);
    assert_eq!(send(UpstreamState::Healthy), 200);
    assert_eq!(send(UpstreamState::Http(503)), 503);
    assert_eq!(rig.metric("ejections"), 1, "b is not ejected");
}
