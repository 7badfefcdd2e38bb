//! `make demo`: the guide's steps 3, 4 and 6 on a real Envoy 1.40.
//!
//! `../shared/reference/multicluster-zone-region-failover-guide.txt` walks a
//! client in cluster 1 (network `cluster1-network`, region `us-east-1`, zone
//! `us-east-1a`) through failover between the `in-ambient` pods of two
//! clusters. Here a local Envoy running the filter plays the cluster-1
//! waypoint, and loopback HTTP servers play the pods:
//!
//! ```text
//! in-ambient-7d8f9b6c54-abc12  cluster 1  us-east-1 / us-east-1a
//! in-ambient-7d8f9b6c54-def34  cluster 1  us-east-1 / us-east-1b
//! in-ambient-8e9f0c7d65-xyz98  cluster 2  us-west-2 / us-west-2a
//! in-ambient-8e9f0c7d65-uvw56  cluster 2  us-west-2 / us-west-2b
//! ```
//!
//! Envoy runs on `envoy/demo/envoy.yaml` + `envoy/demo/cds.yaml`, the files
//! `envoy/docker-compose.yaml` mounts, with only the deployment-specific
//! values substituted (pod addresses, paths, ports; see the files' headers).
//! Scaling a deployment or deleting a pod is a CDS update that removes the
//! pod from the cluster and from the inventory in its metadata; a failing
//! pod is an upstream answering 503 or refusing connections.
//!
//! For each step it prints what the guide shows (the `sort | uniq -c` table
//! of which pod answered), the filter's decision (the ranking, and the
//! deltas of its `wasmcustom.locality_failover.*` metrics and its log lines),
//! and PASS/FAIL against the expectation; then a summary. Exit status: 0 all
//! passed, 1 a step differed, 2 the demo could not run.
//!
//! ```text
//! demo [--wasm build/locality_failover.wasm] [--config-dir envoy/demo]
//!      [--work-dir DIR] [--state-file FILE]
//! demo --describe [--config-dir envoy/demo]   # what it reads, as JSON
//! ```
//! `--state-file` receives `<envoy pid> <base id>` once Envoy runs, so that
//! `scripts/demo.sh` can stop it even if this process is killed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use host_harness::envoy::config::Layout;
use host_harness::envoy::{
    envoy_binary, http_get, EnvoyOptions, EnvoyProcess, Generated, TempDir, UpstreamState,
    Upstreams,
};
use locality_failover::config::{
    RankingSource, Settings, TrafficDistribution, LABEL_NETWORK, LABEL_REGION, LABEL_ZONE,
};
use locality_failover::inventory::{EndpointSpec, Inventory};
use locality_failover::ranking::rank;
use serde_json::{json, Value};

/// What the shared files say for the docker-compose deployment; the demo
/// replaces exactly these.
const COMPOSE_WASM: &str = "/etc/envoy/locality_failover.wasm";
const COMPOSE_CDS: &str = "/etc/envoy/demo/cds.yaml";
const COMPOSE_DIR: &str = "/etc/envoy/demo";
const COMPOSE_LOG: &str = "/dev/stdout";
const METADATA_NAMESPACE: &str = "locality-failover";
const METRIC_PREFIX: &str = "wasmcustom.locality_failover.";
/// What the guide's client calls.
const HOST: &str = "in-ambient.httpbin.mesh.internal:8000";
const PATH: &str = "/hostname";
const T: Duration = Duration::from_secs(10);

const ABC: &str = "in-ambient-7d8f9b6c54-abc12";
const DEF: &str = "in-ambient-7d8f9b6c54-def34";
const XYZ: &str = "in-ambient-8e9f0c7d65-xyz98";
const UVW: &str = "in-ambient-8e9f0c7d65-uvw56";

const LISTENER_STEP3: &str = "step3-prefer-network";
const LISTENER_STEP4: &str = "step4-prefer-close";
const LISTENER_GUIDE_DR: &str = "step6-zone-region";
const LISTENER_FIXED_DR: &str = "step6-network-region-zone";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e}");
            eprintln!("usage: demo [--wasm FILE] [--config-dir DIR] [--work-dir DIR] [--state-file FILE] | demo --describe [--config-dir DIR]");
            return ExitCode::from(2);
        }
    };
    let files = match DemoFiles::load(&opts.config_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.describe {
        return match serde_json::to_string_pretty(&files.describe()) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("demo: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(&opts, &files) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("\ndemo: {e}");
            ExitCode::from(2)
        }
    }
}

struct Options {
    wasm: PathBuf,
    config_dir: PathBuf,
    work_dir: Option<PathBuf>,
    state_file: Option<PathBuf>,
    describe: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            wasm: PathBuf::from("build/locality_failover.wasm"),
            config_dir: PathBuf::from("envoy/demo"),
            work_dir: None,
            state_file: None,
            describe: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--wasm" => o.wasm = value()?,
                "--config-dir" => o.config_dir = value()?,
                "--work-dir" => o.work_dir = Some(value()?),
                "--state-file" => o.state_file = Some(value()?),
                "--describe" => o.describe = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------
// The shared files.

/// One `in-ambient` pod, from the inventory in the cluster's metadata.
#[derive(Clone, Debug)]
struct Pod {
    name: String,
    /// `ip:port` as written in cds.yaml (the docker-compose address).
    address: String,
    labels: BTreeMap<String, String>,
}

impl Pod {
    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("-")
    }
}

/// One listener of the bootstrap: a guide step with its plugin configuration.
#[derive(Clone, Debug)]
struct ListenerInfo {
    name: String,
    port: u64,
    plugin_config: String,
}

struct DemoFiles {
    bootstrap_path: PathBuf,
    cds_path: PathBuf,
    bootstrap: Value,
    /// The one cluster of cds.yaml.
    cluster: Value,
    cluster_name: String,
    pods: Vec<Pod>,
    listeners: Vec<ListenerInfo>,
    node_labels: BTreeMap<String, String>,
    admin_port: u64,
}

/// A file in JSON syntax with `#` comment lines (valid YAML; see the
/// header of envoy/demo/envoy.yaml).
fn read_commented_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).map_err(|e| {
        format!(
            "{}: {e} (this file must stay JSON with `#` comment lines only, see its header)",
            path.display()
        )
    })
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl DemoFiles {
    fn load(dir: &Path) -> Result<DemoFiles, String> {
        let bootstrap_path = dir.join("envoy.yaml");
        let cds_path = dir.join("cds.yaml");
        let bootstrap = read_commented_json(&bootstrap_path)?;
        let cds = read_commented_json(&cds_path)?;
        let bad = |what: &str| format!("{}: {what}", cds_path.display());
        let clusters = cds
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no resources"))?;
        let [cluster] = clusters.as_slice() else {
            return Err(bad("expected exactly one cluster"));
        };
        let cluster_name = str_at(cluster, "/name").ok_or_else(|| bad("cluster without a name"))?;
        let inventory = cluster
            .pointer(&format!(
                "/metadata/filter_metadata/{METADATA_NAMESPACE}/endpoints"
            ))
            .ok_or_else(|| {
                bad("no inventory in metadata.filter_metadata[\"locality-failover\"]")
            })?;
        let specs: Vec<EndpointSpec> =
            serde_json::from_value(inventory.clone()).map_err(|e| bad(&e.to_string()))?;
        let pods: Vec<Pod> = specs
            .into_iter()
            .map(|s| Pod {
                name: s.name.clone().unwrap_or_else(|| s.address.clone()),
                address: s.address,
                labels: s.labels,
            })
            .collect();
        // load_assignment and the inventory must name the same pods.
        let mut assigned = BTreeMap::new();
        for group in cluster
            .pointer("/load_assignment/endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in group
                .get("lb_endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let host = str_at(e, "/endpoint/hostname")
                    .unwrap_or_default()
                    .to_string();
                let ip = str_at(e, "/endpoint/address/socket_address/address").unwrap_or_default();
                let port = e
                    .pointer("/endpoint/address/socket_address/port_value")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                assigned.insert(host, format!("{ip}:{port}"));
            }
        }
        let inventory_map: BTreeMap<String, String> = pods
            .iter()
            .map(|p| (p.name.clone(), p.address.clone()))
            .collect();
        if assigned != inventory_map {
            return Err(bad(&format!(
                "load_assignment {assigned:?} and the inventory {inventory_map:?} differ"
            )));
        }
        for want in [ABC, DEF, XYZ, UVW] {
            if !inventory_map.contains_key(want) {
                return Err(bad(&format!("pod {want} (the guide's) is missing")));
            }
        }

        let bad = |what: String| format!("{}: {what}", bootstrap_path.display());
        let mut listeners = Vec::new();
        for l in bootstrap
            .pointer("/static_resources/listeners")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = str_at(l, "/name").unwrap_or_default().to_string();
            let port = l
                .pointer("/address/socket_address/port_value")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let hcm = l
                .pointer("/filter_chains/0/filters/0/typed_config")
                .ok_or_else(|| bad(format!("listener {name}: no connection manager")))?;
            let plugin_config = hcm
                .get("http_filters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|f| str_at(f, "/name") == Some("envoy.filters.http.wasm"))
                .and_then(|f| str_at(f, "/typed_config/config/configuration/value"))
                .ok_or_else(|| bad(format!("listener {name}: no wasm filter configuration")))?
                .to_string();
            let route_cluster = hcm
                .pointer("/route_config/virtual_hosts/0/routes/0/route/cluster")
                .and_then(Value::as_str);
            if route_cluster != Some(cluster_name) {
                return Err(bad(format!(
                    "listener {name} routes to {route_cluster:?}, not to {cluster_name}"
                )));
            }
            listeners.push(ListenerInfo {
                name,
                port,
                plugin_config,
            });
        }
        for want in [
            LISTENER_STEP3,
            LISTENER_STEP4,
            LISTENER_GUIDE_DR,
            LISTENER_FIXED_DR,
        ] {
            if !listeners.iter().any(|l| l.name == want) {
                return Err(bad(format!("listener {want} is missing")));
            }
        }
        let node_labels: BTreeMap<String, String> = bootstrap
            .pointer("/node/metadata/LABELS")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad(format!("node.metadata.LABELS: {e}")))?
            .unwrap_or_default();
        let admin_port = bootstrap
            .pointer("/admin/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(DemoFiles {
            bootstrap_path,
            cds_path,
            bootstrap,
            cluster_name: cluster_name.to_string(),
            cluster: cluster.clone(),
            pods,
            listeners,
            node_labels,
            admin_port,
        })
    }

    /// What the demo reads, for `--describe` (and tests/shipping.rs).
    fn describe(&self) -> Value {
        let abs = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .into_owned()
        };
        json!({
            "bootstrap": abs(&self.bootstrap_path),
            "cds": abs(&self.cds_path),
            "substituted": {
                "wasm": COMPOSE_WASM,
                "cds_path": COMPOSE_CDS,
                "watched_directory": COMPOSE_DIR,
                "access_log": COMPOSE_LOG,
                "listen_address": "0.0.0.0",
                "ports": "listener and admin ports become ephemeral",
                "pod_addresses": "each pod becomes a loopback upstream",
            },
            "admin_port": self.admin_port,
            "cluster": self.cluster_name,
            "node_labels": self.node_labels,
            "listeners": self.listeners.iter().map(|l| json!({
                "name": l.name, "port": l.port, "plugin_config": l.plugin_config,
            })).collect::<Vec<_>>(),
            "pods": self.pods.iter().map(|p| json!({
                "name": p.name, "address": p.address, "labels": p.labels,
            })).collect::<Vec<_>>(),
        })
    }

    fn listener(&self, name: &str) -> Option<&ListenerInfo> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// Applies `f` to every value of a JSON tree (children first).
fn walk(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, f)),
        Value::Object(m) => m.values_mut().for_each(|x| walk(x, f)),
        _ => {}
    }
    f(v);
}

/// The bootstrap with the deployment-specific values of this run.
fn localize_bootstrap(bootstrap: &Value, layout: &Layout, wasm: &Path) -> Value {
    let mut b = bootstrap.clone();
    let strings = [
        (COMPOSE_WASM, wasm.to_string_lossy().into_owned()),
        (COMPOSE_CDS, layout.cds().to_string_lossy().into_owned()),
        (COMPOSE_DIR, layout.xds_dir().to_string_lossy().into_owned()),
        (
            COMPOSE_LOG,
            layout.access_log().to_string_lossy().into_owned(),
        ),
    ];
    walk(&mut b, &mut |v| {
        if let Value::String(s) = v {
            if let Some((_, to)) = strings.iter().find(|(from, _)| from == s) {
                *s = to.clone();
            }
        }
        if let Some(sa) = v.get_mut("socket_address") {
            if sa.get("address").and_then(Value::as_str) == Some("0.0.0.0") {
                sa["address"] = json!("127.0.0.1");
                sa["port_value"] = json!(0);
            }
        }
    });
    b
}

/// The cluster with the pods at their loopback addresses, keeping only
/// `present` pods (in `load_assignment` and in the inventory), at `revision`.
fn cluster_for(
    cluster: &Value,
    addresses: &BTreeMap<String, SocketAddr>,
    present: &BTreeSet<&str>,
    revision: u32,
) -> Value {
    let mut c = cluster.clone();
    walk(&mut c, &mut |v| {
        if let Some(sa) = v.get_mut("socket_address") {
            let key = format!(
                "{}:{}",
                sa.get("address")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                sa.get("port_value").and_then(Value::as_u64).unwrap_or(0)
            );
            if let Some(a) = addresses.get(&key) {
                sa["address"] = json!(a.ip().to_string());
                sa["port_value"] = json!(a.port());
            }
        }
    });
    if let Some(Value::Array(groups)) = c.pointer_mut("/load_assignment/endpoints") {
        for g in groups.iter_mut() {
            if let Some(Value::Array(eps)) = g.get_mut("lb_endpoints") {
                eps.retain(|e| {
                    str_at(e, "/endpoint/hostname").is_some_and(|h| present.contains(h))
                });
            }
        }
        groups.retain(|g| {
            g.get("lb_endpoints")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
    }
    if let Some(inv) = c.pointer_mut(&format!("/metadata/filter_metadata/{METADATA_NAMESPACE}")) {
        inv["revision"] = json!(format!("demo-{revision}"));
        if let Some(Value::Array(eps)) = inv.get_mut("endpoints") {
            eps.retain(|e| str_at(e, "/name").is_some_and(|n| present.contains(n)));
            for e in eps.iter_mut() {
                let a = str_at(e, "/address")
                    .and_then(|a| addresses.get(a))
                    .copied();
                if let Some(a) = a {
                    e["address"] = json!(a.to_string());
                }
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------
// Expectations and results.

fn short(pod: &str) -> &str {
    pod.rsplit('-').next().unwrap_or(pod)
}

/// What a phase must show: exact attempts for some pods, the rest of the
/// attempts shared by a set of pods (each at least once), every other pod
/// none; and how many answers were 5xx.
#[derive(Clone, Debug)]
struct Expect {
    exact: Vec<(&'static str, u64)>,
    spread: Vec<&'static str>,
    spread_total: u64,
    client_errors: usize,
}

impl Expect {
    fn only(pod: &'static str, n: u64) -> Expect {
        Expect {
            exact: vec![(pod, n)],
            spread: vec![],
            spread_total: 0,
            client_errors: 0,
        }
    }

    fn text(&self) -> String {
        let mut parts: Vec<String> = self
            .exact
            .iter()
            .map(|(p, n)| format!("{} x{n}", short(p)))
            .collect();
        if !self.spread.is_empty() {
            let names: Vec<&str> = self.spread.iter().map(|p| short(p)).collect();
            parts.push(format!(
                "{} over {{{}}}",
                self.spread_total,
                names.join(", ")
            ));
        }
        let mut s = parts.join(", ");
        if self.client_errors > 0 {
            s.push_str(&format!("; {} x 5xx", self.client_errors));
        }
        s
    }

    fn check(&self, attempts: &BTreeMap<String, u64>, client_errors: usize) -> bool {
        let mut ok = client_errors == self.client_errors;
        let mut spread_sum = 0;
        for (pod, n) in attempts {
            if let Some((_, want)) = self.exact.iter().find(|(p, _)| p == pod) {
                ok &= n == want;
            } else if self.spread.contains(&pod.as_str()) {
                ok &= *n >= 1;
                spread_sum += n;
            } else {
                ok &= *n == 0;
            }
        }
        for (pod, want) in &self.exact {
            ok &= attempts.get(*pod).copied().unwrap_or(0) == *want;
        }
        for pod in &self.spread {
            ok &= attempts.get(*pod).copied().unwrap_or(0) >= 1;
        }
        ok && spread_sum == self.spread_total
    }
}

fn observed_text(attempts: &BTreeMap<String, u64>, client_errors: usize) -> String {
    let mut parts: Vec<String> = attempts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| format!("{} x{n}", short(p)))
        .collect();
    if parts.is_empty() {
        parts.push("no pod".into());
    }
    let mut s = parts.join(", ");
    if client_errors > 0 {
        s.push_str(&format!("; {client_errors} x 5xx"));
    }
    s
}

struct Row {
    id: &'static str,
    title: &'static str,
    expected: String,
    observed: String,
    pass: bool,
}

// ---------------------------------------------------------------------------
// The run.

struct Demo<'a> {
    files: &'a DemoFiles,
    envoy: EnvoyProcess,
    ups: Upstreams,
    /// docker-compose address (`ip:port`) -> loopback upstream.
    addresses: BTreeMap<String, SocketAddr>,
    present: BTreeSet<&'static str>,
    revision: u32,
    log_offset: u64,
    rows: Vec<Row>,
}

fn run(opts: &Options, files: &DemoFiles) -> Result<bool, String> {
    let wasm = std::fs::canonicalize(&opts.wasm)
        .map_err(|e| format!("{}: {e} (run `make build` first)", opts.wasm.display()))?;
    let binary =
        envoy_binary().ok_or("envoy not found on PATH (scripts/setup.sh installs Envoy 1.40)")?;
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let version = version
        .split_whitespace()
        .find(|w| w.contains("/1."))
        .and_then(|w| w.split('/').nth(1))
        .unwrap_or("unknown version")
        .to_string();

    let _temp;
    let dir = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            d.clone()
        }
        None => {
            let t = TempDir::new("demo").map_err(|e| format!("temp dir: {e}"))?;
            let p = t.path().to_path_buf();
            _temp = t;
            p
        }
    };
    let layout = Layout::new(&dir);

    let names: Vec<&str> = files.pods.iter().map(|p| p.name.as_str()).collect();
    let ups = Upstreams::start(&names).map_err(|e| format!("loopback upstreams: {e}"))?;
    let mut addresses = BTreeMap::new();
    for p in &files.pods {
        let a = ups
            .addr(&p.name)
            .ok_or_else(|| format!("no upstream for {}", p.name))?;
        addresses.insert(p.address.clone(), a);
    }

    let all: BTreeSet<&'static str> = [ABC, DEF, XYZ, UVW].into_iter().collect();
    let generated = Generated {
        bootstrap: localize_bootstrap(&files.bootstrap, &layout, &wasm),
        clusters: Some(vec![cluster_for(&files.cluster, &addresses, &all, 0)]),
        load_assignment: None,
    };
    let options = EnvoyOptions {
        binary: Some(binary),
        concurrency: 2,
        log_level: "warning".into(),
        extra_args: vec!["--component-log-level".into(), "wasm:info".into()],
        ..EnvoyOptions::default()
    };
    let started = Instant::now();
    let envoy = EnvoyProcess::start(&layout, &generated, &options)
        .map_err(|e| format!("Envoy did not start: {e}"))?;
    if let Some(f) = &opts.state_file {
        std::fs::write(f, format!("{} {}\n", envoy.pid(), envoy.base_id()))
            .map_err(|e| format!("{}: {e}", f.display()))?;
    }

    println!("locality-failover demo: the guide's steps 3, 4 and 6 on a real Envoy");
    println!(
        "(../shared/reference/multicluster-zone-region-failover-guide.txt; no Kubernetes here:"
    );
    println!(
        " one Envoy plays the cluster-1 waypoint, loopback HTTP servers play the in-ambient pods)"
    );
    println!();
    println!(
        "Envoy   {version} (pid {}), 2 workers, ready in {} ms",
        envoy.pid(),
        started.elapsed().as_millis()
    );
    println!(
        "        config {} + {} (the files envoy/docker-compose.yaml mounts;",
        files.bootstrap_path.display(),
        files.cds_path.display()
    );
    println!("        pod addresses, paths and ports substituted)");
    println!(
        "filter  {} ({} KB)",
        opts.wasm.display(),
        std::fs::metadata(&wasm)
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    );
    let node = &files.node_labels;
    println!(
        "client  the waypoint of cluster 1: {} / {} / {}",
        node.get(LABEL_NETWORK).map(String::as_str).unwrap_or("-"),
        node.get(LABEL_REGION).map(String::as_str).unwrap_or("-"),
        node.get(LABEL_ZONE).map(String::as_str).unwrap_or("-"),
    );
    println!("pods");
    for p in &files.pods {
        println!(
            "        {:<28} {:<17} {:<10} {:<11} {} (compose: {})",
            p.name,
            p.label(LABEL_NETWORK),
            p.label(LABEL_REGION),
            p.label(LABEL_ZONE),
            addresses
                .get(&p.address)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            p.address
        );
    }
    println!("listeners (one per guide step, each with its own filter configuration)");
    for l in &files.listeners {
        let addr = envoy
            .listener_addr(&l.name)
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into());
        println!(
            "        {:<26} {:<16} {}",
            l.name,
            addr,
            config_summary(&l.plugin_config)
        );
    }
    println!("timing  step 6: the guide's baseEjectionTime 3m is scaled down to 3s and its");
    println!("        interval 10s to 1s, so that the demo runs in seconds");

    let mut demo = Demo {
        files,
        envoy,
        ups,
        addresses,
        present: all,
        revision: 0,
        log_offset: 0,
        rows: Vec::new(),
    };
    let warnings = demo.filter_log();
    if !warnings.is_empty() {
        println!("\nThe filter at configure time (Envoy log):");
        for w in warnings {
            println!("        {w}");
        }
    }
    demo.steps()?;
    Ok(demo.summary())
}

/// One line describing a plugin configuration.
fn config_summary(config: &str) -> String {
    let v: Value = serde_json::from_str(config).unwrap_or(Value::Null);
    if let Some(order) = v
        .pointer("/trafficPolicy/loadBalancer/localityLbSetting/failoverPriority")
        .and_then(Value::as_array)
    {
        let short_labels: Vec<&str> = order
            .iter()
            .filter_map(Value::as_str)
            .map(|l| l.rsplit('/').next().unwrap_or(l))
            .collect();
        let od = v.pointer("/trafficPolicy/outlierDetection");
        let get = |k: &str| {
            od.and_then(|o| o.get(k))
                .map(|x| x.to_string().trim_matches('"').to_string())
                .unwrap_or_else(|| "-".into())
        };
        return format!(
            "DestinationRule failoverPriority [{}], outlierDetection {} x 5xx, interval {}, baseEjectionTime {}, maxEjectionPercent {}",
            short_labels.join(", "),
            get("consecutive5xxErrors"),
            get("interval"),
            get("baseEjectionTime"),
            get("maxEjectionPercent"),
        );
    }
    match v.get("trafficDistribution").and_then(Value::as_str) {
        Some(td) => format!("trafficDistribution {td}"),
        None => "defaults".into(),
    }
}

impl Demo<'_> {
    fn steps(&mut self) -> Result<(), String> {
        // ------------------------------------------------------------ step 3
        self.heading(
            "Step 3: default multicluster L4 failover (PreferNetwork)",
            LISTENER_STEP3,
            "The Service has no traffic distribution: PreferNetwork, same network first.\n\
             (The guide's ztunnel makes this choice at L4; here the filter makes it.)",
        );
        self.scale(
            &[ABC, XYZ],
            "cluster 1 runs in-ambient with 1 replica (us-east-1a), cluster 2 with 1 (us-west-2a)",
        )?;
        self.ranking(LISTENER_STEP3)?;
        self.phase(
            "3a",
            "cluster 1 healthy: responses from the local cluster",
            LISTENER_STEP3,
            10,
            &[format!("{ABC}   (on every line)")],
            Expect::only(ABC, 10),
        )?;
        self.scale(
            &[XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        )?;
        self.ranking(LISTENER_STEP3)?;
        self.phase(
            "3b",
            "cluster 1 scaled to 0: failover to cluster 2",
            LISTENER_STEP3,
            5,
            &[format!("{XYZ}   (5 lines)")],
            Expect::only(XYZ, 5),
        )?;
        self.scale(
            &[ABC, XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=1",
        )?;
        self.phase(
            "3c",
            "scaled back to 1: traffic returns to cluster 1",
            LISTENER_STEP3,
            10,
            &["(the guide scales back up without sending requests)".into()],
            Expect::only(ABC, 10),
        )?;

        // ------------------------------------------------------------ step 4
        self.heading(
            "Step 4: zone-aware traffic distribution (PreferClose)",
            LISTENER_STEP4,
            "in-ambient is annotated networking.istio.io/traffic-distribution=PreferClose:\n\
             same zone, then same region, then other regions.",
        );
        self.scale(
            &[ABC, DEF, XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2\n\
             (pods in us-east-1a and us-east-1b; cluster 2 keeps its pod in us-west-2a)",
        )?;
        self.ranking(LISTENER_STEP4)?;
        self.phase(
            "4a",
            "all healthy: the pod in the client's zone",
            LISTENER_STEP4,
            10,
            &[format!("     10 {ABC}")],
            Expect::only(ABC, 10),
        )?;
        self.scale(
            &[DEF, XYZ],
            "$ kubectl --context=${context1} delete pod -n httpbin in-ambient-7d8f9b6c54-abc12\n\
             (as in the guide, the moment the zone has no pod; a Deployment would start a new one)",
        )?;
        self.ranking(LISTENER_STEP4)?;
        self.phase(
            "4b",
            "same-zone pod deleted: same region, other zone",
            LISTENER_STEP4,
            10,
            &[format!("     10 {DEF}")],
            Expect::only(DEF, 10),
        )?;
        self.scale(
            &[XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        )?;
        self.ranking(LISTENER_STEP4)?;
        self.phase(
            "4c",
            "region empty: other region (cluster 2)",
            LISTENER_STEP4,
            10,
            &[
                "     10 in-ambient-8e9f0c7d65-ghi78".into(),
                format!(
                    "(the guide's name for the cluster-2 pod here; steps 3 and 6 call it {XYZ})"
                ),
            ],
            Expect::only(XYZ, 10),
        )?;
        self.scale(
            &[ABC, DEF, XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2",
        )?;
        self.phase(
            "4d",
            "scaled back to 2: the same zone again",
            LISTENER_STEP4,
            10,
            &["(the guide scales back without sending requests)".into()],
            Expect::only(ABC, 10),
        )?;

        // ------------------------------------------------------------ step 6
        self.heading(
            "Step 6: DestinationRule with explicit failover priority, as the guide writes it",
            LISTENER_GUIDE_DR,
            "DestinationRule in-ambient-failover: failoverPriority [topology.kubernetes.io/zone,\n\
             topology.kubernetes.io/region], ROUND_ROBIN, outlierDetection consecutive5xxErrors 5,\n\
             interval 10s (1s here), baseEjectionTime 3m (3s here), maxEjectionPercent 50.\n\
             The guide says: \"same zone first, then same region, then other regions\".",
        );
        self.scale(
            &[ABC, DEF, XYZ, UVW],
            "cluster 2 runs 2 replicas, in us-west-2a and us-west-2b, as the step-6 diagram shows",
        )?;
        println!(
            "\n    Istio's rule (and the filter's): walk the labels in order; the FIRST label that differs\n\
             \x20   decides. For the us-east-1b pod the zone differs already, exactly as for the us-west-2\n\
             \x20   pods: all three share one priority. The region label is never reached."
        );
        self.ranking(LISTENER_GUIDE_DR)?;
        self.phase(
            "6a",
            "all healthy: same zone",
            LISTENER_GUIDE_DR,
            5,
            &["(the guide starts from here)".into()],
            Expect::only(ABC, 5),
        )?;
        self.scale(
            &[XYZ, UVW],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        )?;
        self.phase(
            "6b",
            "cluster 1 scaled to 0: failover to cluster 2, by the failover priority",
            LISTENER_GUIDE_DR,
            5,
            &[
                format!("{XYZ}   (5 lines)"),
                "(here round robin over both cluster-2 pods; the guide's example shows one)".into(),
            ],
            Expect {
                exact: vec![],
                spread: vec![XYZ, UVW],
                spread_total: 5,
                client_errors: 0,
            },
        )?;
        self.scale(
            &[ABC, DEF, XYZ, UVW],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2",
        )?;
        self.set(
            ABC,
            UpstreamState::Http(503),
            "the app in us-east-1a starts failing: every request answers 503",
        )?;
        self.phase(
            "6c",
            "THE PITFALL: same-zone pod fails; ejected after 5 x 503; where does the rest go?",
            LISTENER_GUIDE_DR,
            10,
            &[
                "(not shown by the guide; its text promises \"then same region\": us-east-1b only)"
                    .into(),
                format!("Istio with [zone, region]: {DEF} ranks WITH the us-west-2 pods,"),
                "so after the ejection the traffic is spread over us-east-1b AND cluster 2.".into(),
                "Expected below = what Istio does with this DestinationRule.".into(),
            ],
            Expect {
                exact: vec![(ABC, 5)],
                spread: vec![DEF, XYZ, UVW],
                spread_total: 5,
                client_errors: 5,
            },
        )?;
        let ejected_at = Instant::now();
        let before = self.metric("unejections");
        self.set(ABC, UpstreamState::Healthy, "us-east-1a healthy again")?;
        // The filter's metrics are shared by the listeners: let this
        // ejection end before the next listener ejects anything.
        self.wait_for_return(ABC, ejected_at, before);

        self.heading(
            "Step 6, fixed: failoverPriority [network, region, zone]",
            LISTENER_FIXED_DR,
            "The same DestinationRule with failoverPriority [topology.istio.io/network,\n\
             topology.kubernetes.io/region, topology.kubernetes.io/zone]: now a pod of another zone\n\
             of us-east-1 differs only at the last label and ranks before cluster 2 -- what the guide\n\
             means by \"same zone, then same region, then other regions\" (`host-harness lint` and the\n\
             filter's configure-time warning suggest this order).",
        );
        self.ranking(LISTENER_FIXED_DR)?;
        self.phase(
            "6d",
            "all healthy: same zone",
            LISTENER_FIXED_DR,
            4,
            &["(as 6a)".into()],
            Expect::only(ABC, 4),
        )?;
        self.set(
            ABC,
            UpstreamState::Http(503),
            "the app in us-east-1a starts failing: every request answers 503",
        )?;
        self.phase(
            "6e",
            "same-zone pod fails: ejected after 5 x 503, then the same region",
            LISTENER_FIXED_DR,
            10,
            &[
                "(the guide: \"eject endpoints after 5 consecutive 5xx errors\"; then same region)"
                    .into(),
            ],
            Expect {
                exact: vec![(ABC, 5), (DEF, 5)],
                spread: vec![],
                spread_total: 0,
                client_errors: 5,
            },
        )?;
        let ejected_at = Instant::now();
        self.set(ABC, UpstreamState::Healthy, "us-east-1a recovers")?;
        self.phase(
            "6f",
            "recovered, but still ejected inside baseEjectionTime",
            LISTENER_FIXED_DR,
            6,
            &["(the guide: ejected for a 3-minute base ejection time)".into()],
            Expect::only(DEF, 6),
        )?;
        self.set(
            DEF,
            UpstreamState::Refused,
            "us-east-1b fails too: its pod refuses connections (a connect failure counts as 503)",
        )?;
        self.phase(
            "6g",
            "both cluster-1 zones down: after 5 failures the traffic leaves the region",
            LISTENER_FIXED_DR,
            9,
            &[
                "(the guide's diagram: us-east-1a unavailable -> \"failover to next region\")"
                    .into(),
            ],
            Expect {
                exact: vec![(DEF, 5)],
                spread: vec![XYZ, UVW],
                spread_total: 4,
                client_errors: 5,
            },
        )?;
        let before = self.metric("unejections");
        if !self.wait_for_return(ABC, ejected_at, before) {
            println!("    (the check below will show where the traffic went instead)");
        }
        self.phase(
            "6h",
            "after baseEjectionTime the same-zone pod takes the traffic again",
            LISTENER_FIXED_DR,
            6,
            &["(the guide: ejected endpoints return after the base ejection time)".into()],
            Expect::only(ABC, 6),
        )?;
        self.set(DEF, UpstreamState::Healthy, "us-east-1b healthy again")?;
        Ok(())
    }

    /// Waits (at most 10 s) until the filter returns an ejected pod: its
    /// `unejections` counter rises above `before`.
    fn wait_for_return(&mut self, pod: &str, ejected_at: Instant, before: u64) -> bool {
        println!(
            "\n    waiting for baseEjectionTime (3s here; 3m in the guide) and the next interval sweep (1s) ..."
        );
        let returned = self.envoy.wait_for(Duration::from_secs(10), |e| {
            e.stat(&format!("{METRIC_PREFIX}unejections")).unwrap_or(0) > before
        });
        println!(
            "    {pod} {} {:.1} s after its ejection",
            if returned {
                "returned"
            } else {
                "did NOT return"
            },
            ejected_at.elapsed().as_secs_f64()
        );
        for l in self.filter_log() {
            println!("    filter log: {l}");
        }
        returned
    }

    fn heading(&mut self, title: &str, listener: &str, text: &str) {
        println!("\n{}", "=".repeat(100));
        println!("{title}");
        println!(
            "listener {listener}: {}",
            self.files
                .listener(listener)
                .map(|l| config_summary(&l.plugin_config))
                .unwrap_or_default()
        );
        println!("{}", "=".repeat(100));
        for line in text.lines() {
            println!("    {line}");
        }
    }

    /// Scales deployments: the cluster (endpoints and inventory) now holds `present`.
    fn scale(&mut self, present: &[&'static str], what: &str) -> Result<(), String> {
        self.present = present.iter().copied().collect();
        self.revision += 1;
        let cluster = cluster_for(
            &self.files.cluster,
            &self.addresses,
            &self.present,
            self.revision,
        );
        println!();
        for line in what.lines() {
            println!("    {line}");
        }
        let started = Instant::now();
        self.envoy
            .apply_clusters(&[cluster], T)
            .map_err(|e| format!("CDS update: {e}"))?;
        let names: Vec<&str> = present.iter().map(|p| short(p)).collect();
        println!(
            "    -> CDS update: endpoints {{{}}}, applied in {} ms",
            names.join(", "),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    fn set(&mut self, pod: &str, state: UpstreamState, what: &str) -> Result<(), String> {
        self.ups
            .set(pod, state)
            .map_err(|e| format!("{pod}: {e}"))?;
        let s = match state {
            UpstreamState::Healthy => "200".to_string(),
            UpstreamState::Http(c) => c.to_string(),
            UpstreamState::Refused => "connection refused".to_string(),
        };
        println!("\n    {what}\n    -> {pod} answers: {s}");
        Ok(())
    }

    /// The filter's ranking of the present pods (its own code:
    /// `locality_failover::ranking::rank`, on the listener's configuration).
    fn ranking(&self, listener: &str) -> Result<(), String> {
        let l = self
            .files
            .listener(listener)
            .ok_or_else(|| format!("no listener {listener}"))?;
        let settings = Settings::from_bytes(l.plugin_config.as_bytes())
            .map_err(|e| format!("listener {listener}: {e}"))?;
        let pods: Vec<&Pod> = self
            .files
            .pods
            .iter()
            .filter(|p| self.present.contains(p.name.as_str()))
            .collect();
        let specs: Vec<EndpointSpec> = pods
            .iter()
            .map(|p| EndpointSpec {
                address: p.address.clone(),
                name: Some(p.name.clone()),
                labels: p.labels.clone(),
                ..EndpointSpec::default()
            })
            .collect();
        let inventory = Inventory::from_specs(&specs).map_err(|e| e.to_string())?;
        let ranking = rank(
            &settings.policy.ranking,
            &self.files.node_labels,
            &inventory,
        );
        let source = match settings.policy.source {
            RankingSource::DestinationRule => "the DestinationRule's failoverPriority".to_string(),
            RankingSource::TrafficDistribution(TrafficDistribution::PreferNetwork) => {
                "PreferNetwork = failoverPriority [network]".to_string()
            }
            RankingSource::TrafficDistribution(TrafficDistribution::PreferClose) => {
                "PreferClose = failoverPriority [network, region, zone]".to_string()
            }
            other => format!("{other:?}"),
        };
        println!(
            "    the filter's ranking ({source}; over the pods present, compacted as istiod does):"
        );
        let mut rows: Vec<(u32, &Pod)> = pods
            .iter()
            .zip(&ranking.priority)
            .filter_map(|(p, prio)| prio.map(|x| (x, *p)))
            .collect();
        rows.sort_by_key(|(p, _)| *p);
        for (prio, p) in rows {
            println!(
                "      P{prio}  {:<28} {:<17} {:<10} {}",
                p.name,
                p.label(LABEL_NETWORK),
                p.label(LABEL_REGION),
                p.label(LABEL_ZONE)
            );
        }
        Ok(())
    }

    fn metrics(&self) -> BTreeMap<String, u64> {
        self.envoy
            .stats_with_prefix(METRIC_PREFIX)
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches(METRIC_PREFIX).to_string(), v))
            .collect()
    }

    fn metric(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("{METRIC_PREFIX}{name}"))
            .unwrap_or(0)
    }

    /// New lines of Envoy's log written by the filter, deduplicated (each
    /// worker's VM logs the same configure-time warning), with pod names
    /// for addresses.
    fn filter_log(&mut self) -> Vec<String> {
        let path = self.envoy.layout().envoy_log();
        let text = std::fs::read(&path).unwrap_or_default();
        let start = (self.log_offset as usize).min(text.len());
        let new = String::from_utf8_lossy(text.get(start..).unwrap_or_default()).into_owned();
        self.log_offset = text.len() as u64;
        let by_addr: BTreeMap<String, &str> = self
            .addresses
            .iter()
            .filter_map(|(compose, a)| {
                self.files
                    .pods
                    .iter()
                    .find(|p| &p.address == compose)
                    .map(|p| (a.to_string(), p.name.as_str()))
            })
            .collect();
        let mut out: Vec<String> = Vec::new();
        for line in new.lines() {
            let Some(i) = line.find("locality-failover:") else {
                continue;
            };
            let level = if line.contains("[warning]") {
                "warning"
            } else if line.contains("[error]") || line.contains("[critical]") {
                "error"
            } else {
                "info"
            };
            let mut msg = line.get(i..).unwrap_or_default().to_string();
            for (a, name) in &by_addr {
                msg = msg.replace(a.as_str(), name);
            }
            let entry = format!("[{level}] {msg}");
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        out
    }

    /// Sends `n` requests on `listener` as the guide's curl loop does, prints
    /// the `sort | uniq -c` table and the filter's decision, checks `expect`.
    fn phase(
        &mut self,
        id: &'static str,
        title: &'static str,
        listener: &str,
        n: usize,
        guide: &[String],
        expect: Expect,
    ) -> Result<(), String> {
        let addr = self
            .envoy
            .listener_addr(listener)
            .ok_or_else(|| format!("no listener {listener}"))?;
        let metrics_before = self.metrics();
        let mark = self.envoy.access_log().mark();
        let mut ids = Vec::new();
        let mut lines: Vec<(String, String)> = Vec::new(); // (request id, curl's line)
        let mut client_errors = 0;
        for _ in 0..n {
            let r = http_get(addr, PATH, &[("host", HOST)], T)
                .map_err(|e| format!("request to {listener}: {e}"))?;
            let id = r.header("x-request-id").unwrap_or_default().to_string();
            if r.status >= 500 {
                client_errors += 1;
            }
            let line = match (r.status, r.header("x-upstream-name")) {
                (200, Some(pod)) => pod.to_string(),
                (code, Some(pod)) => format!("{pod}  <- HTTP {code} from the pod"),
                (code, None) => format!("HTTP {code} from Envoy: {}", r.text().trim()),
            };
            ids.push(id.clone());
            lines.push((id, line));
        }
        let counts = self.envoy.access_log().wait_for_ids(mark, &ids, T);
        let names = self.ups.address_map();
        // Local replies: name the pod of the failed attempt, as the waypoint log would.
        for (id, line) in lines.iter_mut() {
            if line.starts_with("HTTP ") {
                if let Some(a) = counts.attempts.iter().find(|a| &a.request_id == id) {
                    let pod = a
                        .host
                        .as_deref()
                        .and_then(|h| names.get(h))
                        .map(String::as_str)
                        .unwrap_or("?");
                    let code = line.split_whitespace().nth(1).unwrap_or("5xx");
                    *line = format!(
                        "{pod}  <- HTTP {code} from Envoy: {} ({})",
                        if a.flags.contains("UF") {
                            "connection refused"
                        } else {
                            "upstream failure"
                        },
                        a.flags
                    );
                }
            }
        }
        let mut attempts: BTreeMap<String, u64> = self
            .files
            .pods
            .iter()
            .map(|p| (p.name.clone(), 0))
            .collect();
        for (name, c) in counts.by_name(&names) {
            *attempts.entry(name).or_insert(0) += c;
        }
        let metrics_after = self.metrics();

        println!("\n{id}  {title}");
        println!(
            "    $ for i in $(seq 1 {n}); do curl -s {HOST}{PATH}; done | sort | uniq -c      (listener {listener})"
        );
        let mut table: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, l) in &lines {
            *table.entry(l.as_str()).or_insert(0) += 1;
        }
        for (l, c) in &table {
            println!("    {c:>7} {l}");
        }
        println!("    guide shows:");
        for g in guide {
            println!("            {g}");
        }
        let mut deltas = Vec::new();
        let keys: BTreeSet<&String> = metrics_before.keys().chain(metrics_after.keys()).collect();
        for k in keys {
            let d = metrics_after.get(k).copied().unwrap_or(0) as i64
                - metrics_before.get(k).copied().unwrap_or(0) as i64;
            if d != 0 || k == "failovers" || k == "ejections" {
                deltas.push(format!("{} {d:+}", k.trim_start_matches("requests.")));
            }
        }
        println!(
            "    filter metrics (wasmcustom.locality_failover.*): {}",
            deltas.join(", ")
        );
        for l in self.filter_log() {
            println!("    filter log: {l}");
        }
        if !counts.complete {
            println!("    (access log incomplete: attempts may be undercounted)");
        }
        let pass = expect.check(&attempts, client_errors);
        let expected = expect.text();
        let observed = observed_text(&attempts, client_errors);
        println!(
            "    {}  expected {expected}; observed {observed}",
            if pass { "PASS" } else { "FAIL" }
        );
        if !pass {
            let tail = self.envoy.log_tail(15);
            if !tail.trim().is_empty() {
                println!("    Envoy log tail:");
                for l in tail.lines() {
                    println!("      {l}");
                }
            }
        }
        self.rows.push(Row {
            id,
            title,
            expected,
            observed,
            pass,
        });
        Ok(())
    }

    fn summary(&self) -> bool {
        println!("\n{}", "=".repeat(100));
        println!("Summary: attempts per pod (abc12 = us-east-1a, def34 = us-east-1b, xyz98 = us-west-2a,");
        println!("uvw56 = us-west-2b); expected = the guide's outcome (6c: Istio's, with the guide's DR)");
        println!("{}", "=".repeat(100));
        for r in &self.rows {
            println!(
                "{}  {:<3} {}\n           expected {}\n           observed {}",
                if r.pass { "PASS" } else { "FAIL" },
                r.id,
                r.title,
                r.expected,
                r.observed
            );
        }
        let failed = self.rows.iter().filter(|r| !r.pass).count();
        println!(
            "\n{} of {} checks passed{}",
            self.rows.len() - failed,
            self.rows.len(),
            if failed == 0 {
                ""
            } else {
                " -- the filter did not do what the guide expects (see FAIL above)"
            }
        );
        println!("Envoy and the upstreams are stopped now.");
        failed == 0
    }
}
