//! A simulated Envoy host that runs the filter's real root and request
//! code natively: properties, request headers, process-wide shared data
//! with CAS, a clock, ticks, metrics and logs, for N worker VMs, plus
//! the part of Envoy's router the filter relies on (steering header,
//! retries, local replies, the properties it reads in `on_log`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use locality_failover::feedback::flags;
use locality_failover::filter::{FilterRoot, RequestState};
use locality_failover::host::{AdminGet, Host, HostError, LogLevel, MetricKind};

#[path = "sim_calls.rs"]
mod calls;
#[path = "sim_router.rs"]
mod router;
pub use calls::{AdminAnswer, HttpCall};
pub use router::{RetryPolicy, RouterSteering};

/// Start of the simulated clock (ns since the epoch).
pub const EPOCH_NANOS: u64 = 1_700_000_000_000_000_000;

/// Process-wide state of the simulated Envoy, shared by every worker VM.
#[derive(Debug, Default)]
pub struct SharedState {
    data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    metric_names: Vec<String>,
    metric_values: Vec<i64>,
    pub logs: Vec<(LogLevel, String)>,
    /// Host-call counters, for tests and benchmarks.
    pub calls: CallCounts,
    /// Property reads by path (segments joined with `.`).
    pub property_paths: BTreeMap<String, u64>,
    /// Every `dispatch_http_call` the filter made, in order.
    pub http_calls: Vec<HttpCall>,
    next_token: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    pub shared_reads: u64,
    pub shared_writes: u64,
    pub cas_mismatches: u64,
    pub property_reads: u64,
    pub header_writes: u64,
    /// Bytes of http-call answer bodies the filter read.
    pub call_body_bytes_read: u64,
}

impl SharedState {
    pub fn metric(&self, name: &str) -> i64 {
        self.metric_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.metric_values.get(i))
            .copied()
            .unwrap_or(0)
    }

    pub fn metrics(&self) -> BTreeMap<String, i64> {
        self.metric_names
            .iter()
            .cloned()
            .zip(self.metric_values.iter().copied())
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(|(v, _)| v.as_slice())
    }

    /// Metric `id`'s value; an unknown id fails as the host `call` does.
    fn metric_mut(&mut self, id: u32, call: &'static str) -> Result<&mut i64, HostError> {
        self.metric_values
            .get_mut(id as usize)
            .ok_or_else(|| fault(call))
    }

    /// Writes a key as another process would (for fault tests).
    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.data
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
    }
}

pub type Shared = Arc<Mutex<SharedState>>;

pub fn lock(shared: &Shared) -> MutexGuard<'_, SharedState> {
    // A poisoned lock only means another test thread panicked; the data is
    // still what it was.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Host calls a test can make fail.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub fail_properties: bool,
    pub fail_shared_data: bool,
    pub fail_headers: bool,
}

/// The [`Host`] seen by one callback of one worker.
pub struct SimHost<'a> {
    shared: &'a Shared,
    now: u64,
    properties: &'a BTreeMap<String, Vec<u8>>,
    response: BTreeMap<String, Vec<u8>>,
    config: &'a [u8],
    faults: &'a Faults,
    pub headers: BTreeMap<String, String>,
    response_headers: BTreeMap<String, String>,
    pub local_reply: Option<(u32, String)>,
    pub tick_period: Option<Duration>,
    /// The answer `on_http_call_response` reads: status and body.
    pub call_response: Option<(Option<u32>, Vec<u8>)>,
    /// What `dispatch_http_call` does (`None`: refused).
    pub admin: Option<AdminAnswer>,
}

/// Property key: path segments joined with NUL, as the ABI serialises them.
pub fn prop_key(path: &[&str]) -> String {
    path.join("\0")
}

/// The node's properties as Envoy shows them: every label under
/// `xds.node.metadata.LABELS.*`, the topology labels also as `xds.node.locality`.
pub fn node_properties(node_labels: &BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    let mut properties = BTreeMap::new();
    for (k, v) in node_labels {
        properties.insert(
            prop_key(&["xds", "node", "metadata", "LABELS", k]),
            v.as_bytes().to_vec(),
        );
    }
    for (label, leaf) in [
        ("topology.kubernetes.io/region", "region"),
        ("topology.kubernetes.io/zone", "zone"),
        ("topology.istio.io/subzone", "sub_zone"),
    ] {
        if let Some(v) = node_labels.get(label) {
            properties.insert(
                prop_key(&["xds", "node", "locality", leaf]),
                v.as_bytes().to_vec(),
            );
        }
    }
    properties
}

impl<'a> SimHost<'a> {
    pub fn new(
        shared: &'a Shared,
        now: u64,
        properties: &'a BTreeMap<String, Vec<u8>>,
        config: &'a [u8],
        faults: &'a Faults,
    ) -> Self {
        SimHost {
            shared,
            now,
            properties,
            response: BTreeMap::new(),
            config,
            faults,
            headers: BTreeMap::new(),
            response_headers: BTreeMap::new(),
            local_reply: None,
            tick_period: None,
            call_response: None,
            admin: None,
        }
    }

    pub fn set_response_property(&mut self, path: &[&str], value: Vec<u8>) {
        self.response.insert(prop_key(path), value);
    }

    /// A response header as `on_http_response_headers` sees it.
    pub fn set_response_header(&mut self, name: &str, value: &str) {
        self.response_headers
            .insert(name.to_ascii_lowercase(), value.to_string());
    }
}

fn fault(call: &'static str) -> HostError {
    HostError::Call {
        call,
        status: "injected fault".into(),
    }
}

/// `Err` (an injected fault of `call`) when the test made `call` fail.
fn fault_if(failing: bool, call: &'static str) -> Result<(), HostError> {
    if failing {
        Err(fault(call))
    } else {
        Ok(())
    }
}

impl Host for SimHost<'_> {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        {
            let mut shared = lock(self.shared);
            shared.calls.property_reads += 1;
            *shared.property_paths.entry(path.join(".")).or_default() += 1;
        }
        fault_if(self.faults.fail_properties, "get_property")?;
        let key = prop_key(path);
        Ok(self
            .response
            .get(&key)
            .or_else(|| self.properties.get(&key))
            .cloned())
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        fault_if(self.faults.fail_headers, "get_header_map_value")?;
        Ok(self.headers.get(&name.to_ascii_lowercase()).cloned())
    }

    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        fault_if(self.faults.fail_headers, "get_header_map_value")?;
        Ok(self
            .response_headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.as_bytes().to_vec()))
    }

    fn response_header_pairs(&self) -> Result<Option<Vec<u8>>, HostError> {
        fault_if(self.faults.fail_headers, "get_header_map_pairs")?;
        let pairs = self
            .response_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        Ok(Some(locality_failover::host::decode::encode_header_pairs(
            pairs,
        )))
    }

    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        fault_if(self.faults.fail_headers, "remove_header_map_value")?;
        self.response_headers.remove(&name.to_ascii_lowercase());
        Ok(())
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        fault_if(self.faults.fail_headers, "replace_header_map_value")?;
        lock(self.shared).calls.header_writes += 1;
        let name = name.to_ascii_lowercase();
        match value {
            Some(v) => self.headers.insert(name, v.to_string()),
            None => self.headers.remove(&name),
        };
        Ok(())
    }

    fn send_local_reply(&mut self, status: u32, body: &str) -> Result<(), HostError> {
        self.local_reply = Some((status, body.to_string()));
        Ok(())
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        fault_if(self.faults.fail_shared_data, "get_shared_data")?;
        let mut s = lock(self.shared);
        s.calls.shared_reads += 1;
        Ok(match s.data.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    /// Envoy's `SharedData::set`: a CAS that does not match the stored one
    /// fails; a missing key is created whatever the CAS.
    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), HostError> {
        fault_if(self.faults.fail_shared_data, "set_shared_data")?;
        let mut s = lock(self.shared);
        if let (Some(c), Some((_, current))) = (cas, s.data.get(key)) {
            if c != *current {
                s.calls.cas_mismatches += 1;
                return Err(HostError::CasMismatch);
            }
        }
        s.calls.shared_writes += 1;
        s.next_cas = s.next_cas.wrapping_add(1).max(1);
        let next = s.next_cas;
        s.data.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn now_nanos(&self) -> u64 {
        self.now
    }

    fn set_tick_period(&mut self, period: Duration) -> Result<(), HostError> {
        self.tick_period = Some(period);
        Ok(())
    }

    fn define_metric(&mut self, _kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let mut s = lock(self.shared);
        if let Some(i) = s.metric_names.iter().position(|n| n == name) {
            return Ok(i as u32);
        }
        s.metric_names.push(name.to_string());
        s.metric_values.push(0);
        Ok((s.metric_names.len() - 1) as u32)
    }

    fn increment_metric(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        *lock(self.shared).metric_mut(id, "increment_metric")? += by;
        Ok(())
    }

    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        *lock(self.shared).metric_mut(id, "record_metric")? =
            i64::try_from(value).unwrap_or(i64::MAX);
        Ok(())
    }

    fn log(&self, level: LogLevel, message: &str) {
        lock(self.shared).logs.push((level, message.to_string()));
    }

    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(self.config.to_vec()))
    }

    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        request: &AdminGet,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        if matches!(self.admin, Some(AdminAnswer::Refuse) | None) {
            return Err(HostError::Call {
                call: "dispatch_http_call",
                status: "BadArgument".into(),
            });
        }
        let mut s = lock(self.shared);
        s.next_token = s.next_token.wrapping_add(1);
        let token = s.next_token;
        s.http_calls.push(HttpCall {
            token,
            cluster: cluster.to_string(),
            method: request.method().to_string(),
            path: request.path().to_string(),
            timeout,
            worker: None,
            sent_at: self.now,
            done: false,
        });
        Ok(token)
    }

    fn http_call_status(&self) -> Result<Option<u32>, HostError> {
        Ok(self.call_response.as_ref().and_then(|(status, _)| *status))
    }

    fn http_call_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        let Some((_, body)) = &self.call_response else {
            return Ok(None);
        };
        let part = body
            .get(..size.min(body.len()))
            .unwrap_or_default()
            .to_vec();
        lock(self.shared).calls.call_body_bytes_read += part.len() as u64;
        Ok(Some(part))
    }
}

/// How an upstream endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Healthy,
    Refused,
    Http(u16),
}

/// What one request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOutcome {
    /// Addresses tried, in order.
    pub attempts: Vec<String>,
    /// Status the client got.
    pub status: u32,
    /// The steering header value the filter wrote, if any.
    pub steering: Option<String>,
    pub worker: usize,
    /// The response headers the client got (after the filter).
    pub response_headers: BTreeMap<String, String>,
}

struct Worker {
    root: FilterRoot,
    tick_period: Option<Duration>,
    next_tick: u64,
}

/// N worker VMs of one Envoy with one upstream cluster.
pub struct SimEnvoy {
    pub shared: Shared,
    workers: Vec<Worker>,
    properties: BTreeMap<String, Vec<u8>>,
    config: Vec<u8>,
    now: u64,
    next_worker: usize,
    fallback_rr: usize,
    /// Behaviour of each upstream address.
    pub upstreams: BTreeMap<String, Behavior>,
    /// Addresses Envoy's cluster knows (its host set).
    pub cluster_hosts: Vec<String>,
    pub steering: RouterSteering,
    pub retry: Option<RetryPolicy>,
    pub faults: Faults,
    /// Clock advance per request.
    pub request_spacing: Duration,
    /// Worker that takes every request (one client connection); `None`
    /// spreads requests over the workers in turn (one connection each).
    pub pinned_worker: Option<usize>,
    /// How the admin answers `dispatch_http_call` (`None`: calls refused).
    pub admin: Option<AdminAnswer>,
    /// The route's `include_attempt_count_in_response` (on by default, as
    /// in the Envoy configurations the harness generates): the router's
    /// answers carry `x-envoy-attempt-count`.
    pub attempt_count_in_response: bool,
}

impl SimEnvoy {
    /// `node_labels` become `xds.node.metadata.LABELS.*` and the node locality.
    pub fn new(
        workers: usize,
        node_labels: &BTreeMap<String, String>,
        config: Vec<u8>,
        seed: u64,
        steering: RouterSteering,
    ) -> SimEnvoy {
        let properties = node_properties(node_labels);
        SimEnvoy {
            shared: Arc::new(Mutex::new(SharedState::default())),
            workers: (0..workers.max(1))
                .map(|i| Worker {
                    root: FilterRoot::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64)),
                    tick_period: None,
                    next_tick: 0,
                })
                .collect(),
            properties,
            config,
            now: EPOCH_NANOS,
            next_worker: 0,
            fallback_rr: 0,
            upstreams: BTreeMap::new(),
            cluster_hosts: Vec::new(),
            steering,
            retry: None,
            faults: Faults::default(),
            request_spacing: Duration::from_millis(1),
            pinned_worker: None,
            admin: None,
            attempt_count_in_response: true,
        }
    }

    /// Publishes the cluster (name and metadata bytes), as a CDS update would.
    pub fn set_cluster(&mut self, name: &str, metadata: Vec<u8>, hosts: Vec<String>) {
        self.properties
            .insert(prop_key(&["xds", "cluster_name"]), name.as_bytes().to_vec());
        self.properties
            .insert(prop_key(&["xds", "cluster_metadata"]), metadata);
        self.cluster_hosts = hosts;
    }

    pub fn set_property(&mut self, path: &[&str], value: Option<Vec<u8>>) {
        match value {
            Some(v) => self.properties.insert(prop_key(path), v),
            None => self.properties.remove(&prop_key(path)),
        };
    }

    pub fn set_config(&mut self, config: Vec<u8>) {
        self.config = config;
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn root(&self, worker: usize) -> Option<&FilterRoot> {
        self.workers.get(worker).map(|w| &w.root)
    }

    /// `on_configure` on every worker VM; true if all accepted.
    pub fn configure(&mut self) -> bool {
        let mut ok = true;
        let now = self.now;
        for index in 0..self.workers.len() {
            let accepted = self.on_worker(index, |w, host| {
                let accepted = w.root.on_configure(host);
                w.tick_period = host.tick_period;
                w.next_tick = now + nanos(host.tick_period.unwrap_or(Duration::from_secs(1)));
                accepted
            });
            ok &= accepted == Some(true);
        }
        ok
    }

    /// A host of this Envoy's process (its shared data, clock and faults)
    /// with other properties and configuration: a VM driven by hand.
    pub fn host_with<'a>(
        &'a self,
        properties: &'a BTreeMap<String, Vec<u8>>,
        config: &'a [u8],
    ) -> SimHost<'a> {
        SimHost::new(&self.shared, self.now, properties, config, &self.faults)
    }

    /// Runs `f` on one worker with the host of one callback (`None`: no
    /// such worker).
    fn on_worker<R>(
        &mut self,
        worker: usize,
        f: impl FnOnce(&mut Worker, &mut SimHost<'_>) -> R,
    ) -> Option<R> {
        let w = self.workers.get_mut(worker)?;
        let mut host = SimHost::new(
            &self.shared,
            self.now,
            &self.properties,
            &self.config,
            &self.faults,
        );
        Some(f(w, &mut host))
    }

    /// Moves the clock, firing each worker's ticks at their periods.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now.saturating_add(nanos(by));
        loop {
            let next = self
                .workers
                .iter()
                .filter(|w| w.tick_period.is_some())
                .map(|w| w.next_tick)
                .min();
            match next {
                Some(t) if t <= target => {
                    self.now = t.max(self.now);
                    for index in 0..self.workers.len() {
                        self.tick(index);
                    }
                    self.deliver_calls();
                }
                _ => break,
            }
        }
        self.now = target;
        self.deliver_calls();
    }

    /// One worker's tick, if it is due; the calls it sends are its own.
    fn tick(&mut self, index: usize) {
        let now = self.now;
        let due = self.workers.get(index).filter(|w| w.next_tick <= now);
        let Some(period) = due.and_then(|w| w.tick_period) else {
            return;
        };
        let admin = self.admin.clone();
        self.on_worker(index, |w, host| {
            host.admin = admin;
            w.root.on_tick(host);
            w.next_tick = now + nanos(period).max(1);
        });
        for call in &mut lock(&self.shared).http_calls {
            call.worker.get_or_insert(index);
        }
    }

    /// One client request through the filter and the router.
    pub fn request(&mut self, client_headers: &[(&str, &str)]) -> RequestOutcome {
        let spacing = self.request_spacing;
        self.advance(spacing);
        let worker = match self.pinned_worker {
            Some(w) => w % self.workers.len(),
            None => {
                self.next_worker = self.next_worker.wrapping_add(1);
                (self.next_worker - 1) % self.workers.len()
            }
        };
        let filtered = self.on_worker(worker, |w, host| {
            for (k, v) in client_headers {
                host.headers.insert(k.to_ascii_lowercase(), v.to_string());
            }
            let state = w.root.on_request_headers(host);
            (
                state,
                std::mem::take(&mut host.headers),
                host.local_reply.take(),
            )
        });
        let Some((state, headers, local)) = filtered else {
            return RequestOutcome {
                attempts: vec![],
                status: 500,
                steering: None,
                worker,
                response_headers: BTreeMap::new(),
            };
        };
        let header_name = match &self.steering {
            RouterSteering::OverrideHost { header, .. }
            | RouterSteering::StatefulSession { header, .. }
            | RouterSteering::OriginalDst { header, .. }
            | RouterSteering::RouteHeader { header, .. } => header.clone(),
        };
        let steering = headers.get(&header_name).cloned();
        let (attempts, status, flags_value, last) = match local {
            Some((code, _)) => (vec![], code, flags::NO_HEALTHY_UPSTREAM, None),
            None => self.route(steering.as_deref()),
        };
        let session = self.session_update(steering.as_deref(), last.as_deref());
        let mut state = state;
        let response_headers =
            self.response_headers(worker, state.as_mut(), status, attempts.len(), session);
        if let Some(state) = state {
            self.finish(
                worker,
                &state,
                status,
                flags_value,
                last.as_deref(),
                attempts.len(),
            );
        }
        RequestOutcome {
            attempts,
            status,
            steering,
            worker,
            response_headers,
        }
    }

    /// Envoy's session filter on the response (`onUpdate`): the session
    /// header, base64 of the host that served, when the request named
    /// another host or none.
    fn session_update(&self, named: Option<&str>, served: Option<&str>) -> Option<String> {
        let RouterSteering::StatefulSession { prefix, .. } = &self.steering else {
            return None;
        };
        let served = format!("{prefix}{}", served?);
        let named = named.and_then(locality_failover::session::decode);
        (named.as_deref() != Some(served.as_str())).then(|| {
            let mut value = String::new();
            locality_failover::session::encode_into("", &served, &mut value);
            value
        })
    }

    /// `on_http_response_headers`: Envoy sends every answer, the router's
    /// local replies included, through the filter's encode path (with the
    /// session header `session` when the session filter wrote one).
    /// Returns the headers the client gets.
    fn response_headers(
        &mut self,
        worker: usize,
        state: Option<&mut RequestState>,
        status: u32,
        attempts: usize,
        session: Option<String>,
    ) -> BTreeMap<String, String> {
        // The router writes the count on its own answers (upstream or
        // local replies after attempts), not on a reply before any attempt.
        let count = (self.attempt_count_in_response && attempts > 0).then_some(attempts);
        let session = session.and_then(|v| match &self.steering {
            RouterSteering::StatefulSession { header, .. } => Some((header.clone(), v)),
            _ => None,
        });
        self.on_worker(worker, |w, host| {
            host.set_response_header(":status", &status.to_string());
            if let Some(n) = count {
                host.set_response_header("x-envoy-attempt-count", &n.to_string());
            }
            if let Some((header, value)) = &session {
                host.set_response_header(header, value);
            }
            w.root.on_response_headers(host, state);
            std::mem::take(&mut host.response_headers)
        })
        .unwrap_or_default()
    }

    fn finish(
        &mut self,
        worker: usize,
        state: &RequestState,
        status: u32,
        flags_value: u64,
        last: Option<&str>,
        attempts: usize,
    ) {
        let prefix = match &self.steering {
            RouterSteering::OverrideHost { prefix, .. }
            | RouterSteering::StatefulSession { prefix, .. }
            | RouterSteering::OriginalDst { prefix, .. } => prefix.as_str(),
            RouterSteering::RouteHeader { .. } => "",
        };
        let upstream = last.map(|a| format!("{prefix}{a}"));
        self.on_worker(worker, |w, host| {
            host.set_response_property(
                &["response", "code"],
                i64::from(status).to_le_bytes().to_vec(),
            );
            host.set_response_property(&["response", "flags"], flags_value.to_le_bytes().to_vec());
            if let Some(address) = upstream {
                host.set_response_property(&["upstream", "address"], address.into_bytes());
            }
            host.set_response_property(
                &["upstream", "request_attempt_count"],
                (attempts as u64).to_le_bytes().to_vec(),
            );
            w.root.on_log(host, state);
        });
    }

    /// Ejected addresses as the shared table says now.
    pub fn ejected(&self, prefix: &str, cluster: &str) -> Vec<String> {
        let s = lock(&self.shared);
        let Some(bytes) = s.get(&format!("{prefix}/{cluster}/table")) else {
            return vec![];
        };
        let table = locality_failover::shared::decode_table(bytes);
        table
            .hosts
            .iter()
            .filter(|(_, h)| h.ejected)
            .map(|(a, _)| a.clone())
            .collect()
    }
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
