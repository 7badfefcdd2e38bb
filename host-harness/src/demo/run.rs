//! The run: Envoy on the shared files, one phase's requests and report,
//! the summary.

use super::*;
use crate::envoy::AttemptCounts;

/// A phase's requests: (request id, curl's output line) each, the 5xx
/// count, and the attempts Envoy logged.
type Sent = (Vec<(String, String)>, usize, AttemptCounts);

pub(crate) struct Demo<'a> {
    pub(crate) files: &'a DemoFiles,
    pub(crate) envoy: EnvoyProcess,
    pub(crate) ups: Upstreams,
    /// docker-compose address (`ip:port`) -> loopback upstream.
    pub(crate) addresses: BTreeMap<String, SocketAddr>,
    pub(crate) present: BTreeSet<&'static str>,
    pub(crate) revision: u32,
    pub(crate) log_offset: u64,
    pub(crate) rows: Vec<Row>,
}

/// Runs the demo on `files`: starts the upstreams and Envoy, prints what
/// runs, plays the guide's steps; returns whether every check passed.
pub fn run(opts: &Options, files: &DemoFiles) -> Result<bool> {
    let wasm = std::fs::canonicalize(&opts.wasm).map_err(HarnessError::io(format!(
        "{} (run `make build` first)",
        opts.wasm.display()
    )))?;
    let binary = envoy_binary().ok_or_else(|| HarnessError::Missing {
        what: "envoy".into(),
        hint: "not on PATH (scripts/setup.sh installs Envoy 1.40)".into(),
    })?;
    let version = envoy_version(&binary);
    let (dir, _temp) = work_dir(opts)?;
    let layout = Layout::new(&dir);
    let (ups, addresses) = start_upstreams(files)?;

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
        .map_err(HarnessError::envoy("Envoy did not start"))?;
    if let Some(f) = &opts.state_file {
        std::fs::write(f, format!("{} {}\n", envoy.pid(), envoy.base_id()))
            .map_err(HarnessError::io(f.display().to_string()))?;
    }
    let banner = Banner {
        opts,
        files,
        envoy: &envoy,
        version: &version,
        started,
        addresses: &addresses,
        wasm: &wasm,
    };
    banner.print();

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
    demo.play(guide_steps())?;
    Ok(demo.summary())
}

/// The version `envoy --version` prints (e.g. `1.40.0`).
fn envoy_version(binary: &Path) -> String {
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    version
        .split_whitespace()
        .find(|w| w.contains("/1."))
        .and_then(|w| w.split('/').nth(1))
        .unwrap_or("unknown version")
        .to_string()
}

/// `--work-dir`, or a temporary directory removed when the guard drops.
fn work_dir(opts: &Options) -> Result<(PathBuf, Option<TempDir>)> {
    Ok(match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(HarnessError::io(d.display().to_string()))?;
            (d.clone(), None)
        }
        None => {
            let t = TempDir::new("demo").map_err(HarnessError::io("temp dir"))?;
            (t.path().to_path_buf(), Some(t))
        }
    })
}

/// One loopback upstream per pod; and the pods' compose addresses mapped to them.
fn start_upstreams(files: &DemoFiles) -> Result<(Upstreams, BTreeMap<String, SocketAddr>)> {
    let names: Vec<&str> = files.pods.iter().map(|p| p.name.as_str()).collect();
    let ups = Upstreams::start(&names).map_err(HarnessError::io("loopback upstreams"))?;
    let mut addresses = BTreeMap::new();
    for p in &files.pods {
        let a = ups
            .addr(&p.name)
            .ok_or_else(|| HarnessError::unknown("upstream for", &p.name))?;
        addresses.insert(p.address.clone(), a);
    }
    Ok((ups, addresses))
}

/// What the demo prints before its first step.
struct Banner<'a> {
    opts: &'a Options,
    files: &'a DemoFiles,
    envoy: &'a EnvoyProcess,
    version: &'a str,
    started: Instant,
    addresses: &'a BTreeMap<String, SocketAddr>,
    wasm: &'a Path,
}

impl Banner<'_> {
    fn print(&self) {
        let Banner {
            opts,
            files,
            envoy,
            version,
            started,
            addresses,
            wasm,
        } = self;
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
            std::fs::metadata(wasm).map(|m| m.len() / 1024).unwrap_or(0)
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
    }
}

/// One line describing a plugin configuration.
pub(crate) fn config_summary(config: &str) -> String {
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
    /// Waits (at most 10 s) until the filter returns an ejected pod: its
    /// `unejections` counter rises above `before`.
    pub(crate) fn wait_for_return(&mut self, pod: &str, ejected_at: Instant, before: u64) -> bool {
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

    pub(crate) fn heading(&mut self, title: &str, listener: &str, text: &str) {
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
    pub(crate) fn scale(&mut self, present: &[&'static str], what: &str) -> Result<()> {
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
            .map_err(HarnessError::envoy("CDS update"))?;
        // A worker re-reads the inventory's revision at most this often.
        std::thread::sleep(locality_failover::filter::REVISION_REFRESH);
        let names: Vec<&str> = present.iter().map(|p| short(p)).collect();
        println!(
            "    -> CDS update: endpoints {{{}}}, applied in {} ms",
            names.join(", "),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    pub(crate) fn set(&mut self, pod: &str, state: Behavior, what: &str) -> Result<()> {
        self.ups.set(pod, state).map_err(HarnessError::io(pod))?;
        let s = match state {
            Behavior::Healthy => "200".to_string(),
            Behavior::Http(c) => c.to_string(),
            Behavior::Refused => "connection refused".to_string(),
        };
        println!("\n    {what}\n    -> {pod} answers: {s}");
        Ok(())
    }

    /// The filter's ranking of the present pods (its own code:
    /// `locality_failover::ranking::rank`, on the listener's configuration).
    pub(crate) fn ranking(&self, listener: &str) -> Result<()> {
        let l = self
            .files
            .listener(listener)
            .ok_or_else(|| HarnessError::unknown("listener", listener))?;
        let settings =
            Settings::from_bytes(l.plugin_config.as_bytes()).map_err(|e| HarnessError::File {
                file: format!("listener {listener}"),
                message: e.to_string(),
            })?;
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
        let inventory = Inventory::from_specs(&specs)?;
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

    pub(crate) fn metrics(&self) -> BTreeMap<String, u64> {
        self.envoy
            .stats_with_prefix(METRIC_PREFIX)
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches(METRIC_PREFIX).to_string(), v))
            .collect()
    }

    /// The metrics once a phase's `n` requests are all counted: steered
    /// requests reach Envoy's counters on the VM's tick (at most 1 s late),
    /// so this waits for them (at most 2.5 s).
    fn settled_metrics(&self, before: &BTreeMap<String, u64>, n: u64) -> BTreeMap<String, u64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
        loop {
            let after = self.metrics();
            let counted: u64 = after
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("requests.priority_")
                        || *k == "no_healthy_upstream"
                        || *k == "passthrough"
                })
                .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
                .sum();
            if counted >= n || std::time::Instant::now() >= deadline {
                return after;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub(crate) fn metric(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("{METRIC_PREFIX}{name}"))
            .unwrap_or(0)
    }

    /// New lines of Envoy's log written by the filter, deduplicated (each
    /// worker's VM logs the same configure-time warning), with pod names
    /// for addresses.
    pub(crate) fn filter_log(&mut self) -> Vec<String> {
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

    /// Sends `n` requests to `addr` as the guide's curl loop does; returns
    /// each request's (id, curl's output line), the 5xx count and the
    /// attempts Envoy logged for them.
    fn send_requests(&self, addr: SocketAddr, listener: &str, n: usize) -> Result<Sent> {
        let mark = self.envoy.access_log().mark();
        let mut ids = Vec::new();
        let mut lines: Vec<(String, String)> = Vec::new(); // (request id, curl's line)
        let mut client_errors = 0;
        for _ in 0..n {
            let r = http_get(addr, PATH, &[("host", HOST)], T)
                .map_err(HarnessError::io(format!("request to {listener}")))?;
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
        Ok((lines, client_errors, counts))
    }

    /// Sends `n` requests on `listener` as the guide's curl loop does, prints
    /// the `sort | uniq -c` table and the filter's decision, checks `expect`.
    pub(crate) fn phase(&mut self, phase: Phase) -> Result<()> {
        let Phase {
            id,
            title,
            listener,
            requests: n,
            guide,
            expect,
        } = phase;
        let addr = self
            .envoy
            .listener_addr(listener)
            .ok_or_else(|| HarnessError::unknown("listener", listener))?;
        let metrics_before = self.metrics();
        let (lines, client_errors, counts) = self.send_requests(addr, listener, n)?;
        let names = self.ups.address_map();
        let mut attempts: BTreeMap<String, u64> = self
            .files
            .pods
            .iter()
            .map(|p| (p.name.clone(), 0))
            .collect();
        for (name, c) in counts.by_name(&names) {
            *attempts.entry(name).or_insert(0) += c;
        }
        let metrics_after = self.settled_metrics(&metrics_before, n as u64);

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
        let deltas = metric_deltas(&metrics_before, &metrics_after);
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

    pub(crate) fn summary(&self) -> bool {
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

/// `name +n` for each metric that moved (and always failovers and
/// ejections), for a phase's report.
fn metric_deltas(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    let mut deltas = Vec::new();
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let d =
            after.get(k).copied().unwrap_or(0) as i64 - before.get(k).copied().unwrap_or(0) as i64;
        if d != 0 || k == "failovers" || k == "ejections" {
            deltas.push(format!("{} {d:+}", k.trim_start_matches("requests.")));
        }
    }
    deltas
}
