//! What both real-Envoy modes share: the loopback upstreams, the Envoy
//! process, the client connections (one per step, pinned to a worker), the
//! attempt counting from the access log, and the scaled clock.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use locality_failover::config::OutlierConfig;

use crate::envoy::{
    wait_until, EnvoyOptions, EnvoyProcess, Generated, HttpConnection, Layout, TempDir, Upstreams,
};
use crate::error::{HarnessError, Result};
use crate::scenario::{EndpointState, Scenario};

/// `LF_DEBUG` set: trace every request (status, attempts, steering header)
/// and each step's worker on stderr.
pub fn debug() -> bool {
    std::env::var_os("LF_DEBUG").is_some()
}

/// Bound on one client request (the route timeout is 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on waiting for a request's access log lines.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on an xDS file update being applied.
pub const XDS_TIMEOUT: Duration = Duration::from_secs(10);
/// The simulated host's spacing of requests (scenario time).
const REQUEST_SPACING: Duration = Duration::from_millis(1);
/// Pause after the main-thread round trip of [`Rig::settle`].
const SETTLE: Duration = Duration::from_millis(2);
/// Envoy's access log flush period.
const FLUSH_MS: u32 = 10;

/// One running Envoy with its upstreams. Fields drop in order: client
/// connections, Envoy (killed), upstreams (threads joined), work directory.
pub struct Rig {
    conns: VecDeque<HttpConnection>,
    /// Envoy worker (stats index) that served each step, when known.
    step_workers: Vec<Option<usize>>,
    pub envoy: EnvoyProcess,
    pub upstreams: Upstreams,
    _dir: TempDir,
    listener: SocketAddr,
    workers: usize,
    /// `ip:port` of each upstream -> endpoint name.
    names: BTreeMap<String, String>,
    scale: f64,
    /// Access log offset at the start of the current step.
    mark: u64,
    step: usize,
    mode: &'static str,
    /// (request id, status) of the current step's requests not collected yet.
    sent: Vec<(String, u16)>,
    /// After each request, wait for Envoy's main thread ([`Self::settle`]).
    pub settle: bool,
    /// The route retries (a failed attempt may end in a good answer).
    retries: bool,
    /// Real time of the scenario's t = 0, and the scenario clock.
    t0: Instant,
    clock: Duration,
}

/// What one request did, from the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Endpoint names of the attempts, in order.
    pub attempts: Vec<String>,
    /// Status the client got.
    pub status: u16,
}

impl Rig {
    /// Starts one healthy loopback upstream per scenario endpoint (named
    /// after it), in a fresh work directory.
    pub fn upstreams(scenario: &Scenario, mode: &str) -> Result<(Upstreams, TempDir)> {
        let dir = TempDir::new(mode).map_err(HarnessError::io("work directory"))?;
        let names: Vec<&str> = scenario.endpoints.iter().map(|e| e.name.as_str()).collect();
        let upstreams = Upstreams::start(&names).map_err(HarnessError::io("upstreams"))?;
        Ok((upstreams, dir))
    }

    /// Starts Envoy on `generated` with the scenario's worker threads.
    pub fn start(
        scenario: &Scenario,
        mode: &'static str,
        upstreams: Upstreams,
        dir: TempDir,
        generated: &Generated,
        scale: f64,
    ) -> Result<Rig> {
        let workers = scenario.workers.max(1);
        let layout = Layout::new(dir.path());
        let opts = EnvoyOptions {
            concurrency: u32::try_from(workers).unwrap_or(1),
            file_flush_interval_ms: FLUSH_MS,
            // The filter logs ejections at info level.
            extra_args: vec!["--component-log-level".into(), "wasm:info".into()],
            die_with_parent: true,
            ..EnvoyOptions::default()
        };
        let envoy =
            EnvoyProcess::start(&layout, generated, &opts).map_err(HarnessError::envoy("envoy"))?;
        let listener = envoy.listener().map_err(HarnessError::envoy("envoy"))?;
        let names = upstreams.address_map();
        Ok(Rig {
            conns: VecDeque::new(),
            step_workers: Vec::new(),
            envoy,
            upstreams,
            _dir: dir,
            listener,
            workers: workers.max(1),
            names,
            scale,
            mark: 0,
            step: 0,
            mode,
            sent: Vec::new(),
            settle: false,
            retries: scenario.retries.is_some(),
            t0: Instant::now(),
            clock: Duration::ZERO,
        })
    }

    pub fn addr(&self, name: &str) -> Result<SocketAddr> {
        self.upstreams
            .addr(name)
            .ok_or_else(|| HarnessError::unknown("upstream for endpoint", name))
    }

    /// Another address Envoy logs for an endpoint (e.g. the internal
    /// address `envoy://connect_originate/<ip:port>` of a waypoint).
    pub fn alias(&mut self, address: String, name: String) {
        self.names.insert(address, name);
    }

    /// Endpoint name of an upstream `ip:port` (the address itself if unknown).
    pub fn name_of(&self, address: &str) -> String {
        self.names
            .get(address)
            .cloned()
            .unwrap_or_else(|| address.to_string())
    }

    /// Sorted endpoint names of the hosts, given as (address, ejected by
    /// Envoy's outlier detection), that are ejected.
    pub fn ejected_names<'h>(
        &self,
        hosts: impl IntoIterator<Item = (&'h str, bool)>,
    ) -> Vec<String> {
        let mut names: Vec<String> = hosts
            .into_iter()
            .filter(|(_, ejected)| *ejected)
            .map(|(address, _)| self.name_of(address))
            .collect();
        names.sort();
        names
    }

    /// Sets the behaviour of one upstream for `healthy`, `refused`,
    /// `http-NNN` and `present` (which comes back healthy).
    pub fn set_upstream(&self, name: &str, state: EndpointState) -> Result<()> {
        let Some(behavior) = state.behavior() else {
            return Ok(());
        };
        self.upstreams
            .set(name, behavior)
            .map_err(HarnessError::io(format!("upstream {name}")))
    }

    /// When Envoy armed `cluster`'s outlier interval timer (it does when it
    /// creates the cluster), and the interval, for [`Self::start_clock`];
    /// None without outlier detection, said when the admin does not tell.
    pub fn envoy_sweeps(
        &self,
        cluster: &str,
        outlier: Option<&OutlierConfig>,
    ) -> Option<(SystemTime, Duration)> {
        let interval = outlier?.interval;
        let Some(armed) = self.envoy.cluster_created(cluster) else {
            eprintln!(
                "{}: /config_dump has no last_updated for {cluster}: the scenario clock starts now, Envoy's sweeps at an unknown phase",
                self.mode
            );
            return None;
        };
        Some((armed, interval))
    }

    /// The scenario's t = 0 is now, not when Envoy became ready: what the
    /// player did to get ready (a warm-up request, waiting for the filter's
    /// first inventories) is not scenario time. With `sweeps` (when Envoy
    /// armed the cluster's outlier interval timer, and the real interval),
    /// t = 0 is the first instant from now on a whole number of intervals
    /// after it, so Envoy sweeps where the scenario puts its sweeps; the
    /// wait for it is at most one interval.
    pub fn start_clock(&mut self, sweeps: Option<(SystemTime, Duration)>) {
        let now = Instant::now();
        self.t0 = sweeps
            .and_then(|(armed, interval)| {
                let age = SystemTime::now().duration_since(armed).ok()?;
                let interval = interval.as_nanos().max(1);
                let next = age.as_nanos().div_ceil(interval) * interval;
                let wait = u64::try_from(next - age.as_nanos()).ok()?;
                Some(now + Duration::from_nanos(wait))
            })
            .unwrap_or(now);
        self.clock = Duration::ZERO;
        std::thread::sleep(self.t0.saturating_duration_since(Instant::now()));
    }

    /// Moves the scenario clock by `by` and sleeps until `clock * scale`
    /// has passed since the start in real time. Time spent sending requests
    /// and applying updates is thereby not added to the scenario: its clock
    /// stays where the simulated host's would be (as long as a step's work
    /// takes less real time than the next advance).
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
        let target = self.t0 + self.clock.mul_f64(self.scale);
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        }
    }

    fn active_downstream(&self) -> Option<u64> {
        self.envoy.stat("http.ingress.downstream_cx_active")
    }

    /// Active downstream connections per worker, from the listener's
    /// per-worker gauges (`listener.127.0.0.1_<configured port>.worker_<i>.
    /// downstream_cx_active`; the configured port is 0).
    fn per_worker(&self) -> BTreeMap<usize, u64> {
        let prefix = format!("listener.{}_", self.listener.ip());
        self.envoy
            .stats_with_prefix(&prefix)
            .into_iter()
            .filter_map(|(name, v)| {
                let rest = name.strip_prefix(&prefix)?;
                let (_port, rest) = rest.split_once('.')?;
                let rest = rest.strip_prefix("worker_")?;
                let (worker, stat) = rest.split_once('.')?;
                (stat == "downstream_cx_active").then_some((worker.parse().ok()?, v))
            })
            .collect()
    }

    /// A step starts: its requests go over one new connection. The listener
    /// balances exactly (each new connection to the worker with the fewest,
    /// ties to the first registered), and the previous `workers - 1` steps'
    /// connections stay open while the new one is accepted: steps `0..workers`
    /// meet distinct workers and step `i` meets the worker of step
    /// `i % workers`, as the simulated host pins them.
    pub fn begin_step(&mut self, index: usize) -> Result<()> {
        self.step = index;
        self.sent.clear();
        while self.conns.len() >= self.workers {
            self.conns.pop_front();
        }
        let keep = self.conns.len() as u64;
        // Envoy must have seen the closes before it balances the new one.
        let settled = self.workers == 1
            || wait_until(Duration::from_secs(2), || {
                self.active_downstream().unwrap_or(0) == keep
            });
        if !settled {
            eprintln!(
                "{}: step {index}: Envoy still counts closed client connections; the step may land on another worker",
                self.mode
            );
        }
        self.mark = self.envoy.access_log().mark();
        let c = HttpConnection::connect(self.listener, REQUEST_TIMEOUT).map_err(
            HarnessError::io(format!("step {index}: cannot connect to Envoy")),
        )?;
        self.conns.push_back(c);
        if self.workers > 1 {
            self.check_worker(index);
        }
        Ok(())
    }

    /// Finds the worker that accepted step `index`'s connection and says on
    /// stderr when it is not the one the simulated host would use: steps
    /// `0..workers` meet distinct workers, step `i` then meets step
    /// `i % workers`'s worker.
    fn check_worker(&mut self, index: usize) {
        let open = self.conns.len() as u64;
        let mut seen = BTreeMap::new();
        let accepted = wait_until(Duration::from_secs(2), || {
            seen = self.per_worker();
            seen.values().sum::<u64>() == open
        });
        let mut old: BTreeMap<usize, u64> = BTreeMap::new();
        for k in 1..self.conns.len() {
            if let Some(Some(w)) = index.checked_sub(k).and_then(|i| self.step_workers.get(i)) {
                *old.entry(*w).or_default() += 1;
            }
        }
        let new: Vec<usize> = seen
            .iter()
            .filter(|(w, n)| **n > old.get(w).copied().unwrap_or(0))
            .map(|(w, _)| *w)
            .collect();
        let worker = match (accepted, new.as_slice()) {
            (true, [w]) => Some(*w),
            _ => None,
        };
        self.step_workers.resize(index, None);
        self.step_workers.push(worker);
        let Some(worker) = worker else {
            eprintln!(
                "{}: step {index}: cannot tell which worker serves the client connection (per-worker connections {seen:?})",
                self.mode
            );
            return;
        };
        if debug() {
            eprintln!("{}: step {index}: Envoy worker {worker}", self.mode);
        }
        let ok = if index < self.workers {
            !self.step_workers[..index].contains(&Some(worker))
        } else {
            self.step_workers.get(index % self.workers) == Some(&Some(worker))
        };
        if !ok {
            eprintln!(
                "{}: step {index}: client connection on Envoy worker {worker}, not the worker of step {} as the simulated host pins it (steps' workers {:?})",
                self.mode,
                index % self.workers,
                self.step_workers
            );
        }
    }

    /// Sends one request of the current step on the step's connection and
    /// returns whether the client got a 5xx. Its attempts are read from the
    /// access log once the step's requests have all been sent
    /// ([`Self::collect`]): waiting for Envoy to
    /// flush its log after every request would make each one take ~15 ms,
    /// which the scaled clock turns into most of a second of scenario time.
    pub fn send(&mut self) -> Result<bool> {
        // The simulated host spaces requests 1 ms apart.
        self.clock += REQUEST_SPACING;
        if self.conns.is_empty() {
            let c = HttpConnection::connect(self.listener, REQUEST_TIMEOUT)
                .map_err(HarnessError::io("cannot connect to Envoy"))?;
            self.conns.push_back(c);
        }
        let step = self.step;
        let mode = self.mode;
        let conn = self
            .conns
            .back_mut()
            .ok_or_else(|| HarnessError::Traffic("no client connection".into()))?;
        let before = conn.connects();
        let started = Instant::now();
        let response = conn
            .get("/", &[])
            .map_err(HarnessError::io("request to Envoy"))?;
        if debug() {
            eprintln!("{mode}: step {step}: answered in {:?}", started.elapsed());
        }
        if conn.connects() > before {
            eprintln!(
                "{mode}: step {step}: Envoy closed the client connection, the request went over a new one (maybe another worker)"
            );
        }
        let id = response
            .header("x-request-id")
            .ok_or_else(|| HarnessError::Traffic("Envoy's answer has no x-request-id".into()))?
            .to_string();
        self.sent.push((id, response.status));
        // Only a failed attempt can start an ejection; with retries a failed
        // attempt can hide behind a good answer.
        if self.settle && (response.status >= 500 || self.retries) {
            self.settle();
        }
        Ok(response.status >= 500)
    }

    /// Lets Envoy's own outlier detection see the outcome before the next
    /// request, as the scenario format wants ("each outcome fed back before
    /// the next"): a worker reports each result to the detector on the main
    /// thread, which ejects and posts the new host set back to the workers.
    /// An admin request is served by the main thread after what was posted
    /// to it before; a short pause then lets the worker take the update.
    fn settle(&self) {
        let _ = self.envoy.admin_get("/ready");
        std::thread::sleep(SETTLE);
    }

    /// The outcome of each request of the step sent so far, in order, from
    /// the access log (by request id).
    pub fn collect(&mut self) -> Result<Vec<Outcome>> {
        let ids: Vec<&str> = self.sent.iter().map(|(id, _)| id.as_str()).collect();
        let timeout = LOG_TIMEOUT + Duration::from_millis(10) * ids.len() as u32;
        let started = Instant::now();
        let counts = self
            .envoy
            .access_log()
            .wait_for_ids(self.mark, &ids, timeout);
        if debug() {
            eprintln!(
                "{}: step {}: access log read in {:?}",
                self.mode,
                self.step,
                started.elapsed()
            );
        }
        if !counts.complete {
            eprintln!(
                "{}: step {}: the access log lacks some lines ({} of {} requests seen)",
                self.mode,
                self.step,
                counts.requests.len(),
                ids.len()
            );
        }
        let mut out = Vec::with_capacity(self.sent.len());
        for (id, status) in &self.sent {
            if !counts.requests.iter().any(|r| &r.request_id == id) {
                return Err(HarnessError::Traffic(format!(
                    "request {id}: no access log line after {timeout:?}"
                )));
            }
            let attempts: Vec<&crate::envoy::Attempt> = counts
                .attempts
                .iter()
                .filter(|a| &a.request_id == id)
                .collect();
            let outcome = Outcome {
                attempts: attempts
                    .iter()
                    .filter_map(|a| a.host.as_deref())
                    .map(|h| self.name_of(h))
                    .collect(),
                status: *status,
            };
            if debug() {
                let trace: Vec<String> = attempts
                    .iter()
                    .map(|a| {
                        let name = a
                            .host
                            .as_deref()
                            .map(|h| self.name_of(h))
                            .unwrap_or_default();
                        format!("{name} {} {}", a.code, a.flags)
                    })
                    .collect();
                eprintln!("{}: step {}: {id} {status} {trace:?}", self.mode, self.step);
            }
            out.push(outcome);
        }
        self.sent.clear();
        Ok(out)
    }

    /// Bytes of Envoy's own log from `offset` to the last complete line, and
    /// the offset after them.
    pub fn envoy_log_since(&self, offset: u64) -> (String, u64) {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.envoy.layout().envoy_log()) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_string(&mut text);
            }
        }
        let end = text.rfind('\n').map_or(0, |i| i + 1);
        text.truncate(end);
        (text, offset + end as u64)
    }
}
