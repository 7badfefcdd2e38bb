//! The filter's root and request logic, written against [`Host`] so the
//! wasm build and the native harness run the same code.
//!
//! Per VM (one per Envoy worker) a [`FilterRoot`] is either unconfigured
//! (no configuration accepted yet) or configured: validated settings, the
//! proxy's own labels and one engine per upstream cluster, built once per
//! accepted configuration. The work is split by what happens:
//!
//! - [`cluster`]: per-cluster state, inventory loading and the shared
//!   ejection view;
//! - [`request`]: `on_http_request_headers` (pick, write the header, which
//!   replaces any client value);
//! - [`log`]: `on_http_response_headers` (`:status`) and `on_log` (Envoy's
//!   answer back into the outlier detector);
//! - [`node`]: the proxy's own labels;
//! - [`routed`]: which cluster a request goes to (read, or declared);
//! - [`envoy`]: the `envoy` inventory source (admin polling, on the tick).

mod cluster;
mod envoy;
mod log;
mod node;
mod request;
mod routed;

use std::time::Duration;

use crate::config::{
    AttemptCount, InventorySource, OutlierConfig, Settings, SteeringMode, LABEL_REGION,
};
use crate::engine::Engine;
use crate::host::{decode, Host, LogLevel};
use crate::inventory::{Inventory, Labels};
use crate::metrics::{Metric, Metrics};

use cluster::Clusters;
pub use request::{encode_steering, RequestState, MAX_LIST};

/// How often a VM re-reads the cluster metadata to notice a new inventory.
pub const INVENTORY_CHECK: Duration = Duration::from_secs(1);
/// How stale a VM's view of shared state may get while requests flow: the
/// epoch key (ejections, streaks dirtied) is read at most this often per
/// cluster, and on every tick. Requests closer together than this share
/// one read.
pub const VIEW_REFRESH: Duration = Duration::from_millis(1);
/// How stale a VM's view of a versioned inventory may get: the
/// `revision` leaf of the cluster metadata is read at most this often per
/// cluster. Envoy answers that read by walking the cluster's metadata
/// through CEL, which costs several times a shared-data read (about 8 µs
/// on Envoy 1.40 for the benchmark's inventory, perf-attributed; at 1 ms
/// it was 0.7 µs of every request at 11k req/s, the largest host cost left
/// on the success path). A new inventory then takes effect within 10 ms,
/// well inside a control plane's own delay (istiod debounces pushes by
/// 100 ms, `PILOT_DEBOUNCE_AFTER`).
pub const REVISION_REFRESH: Duration = Duration::from_millis(10);
/// The response header Envoy's router writes with
/// `include_attempt_count_in_response` (lower case, as header maps hold it).
pub const ATTEMPT_COUNT_HEADER: &[u8] = b"x-envoy-attempt-count";
/// Cluster key used when the inventory comes from the plugin configuration.
pub const CONFIG_CLUSTER: &str = "config";

pub struct FilterRoot {
    state: State,
    metrics: Metrics,
    seed: u64,
    /// Configurations accepted so far; requests remember which one steered them.
    accepted: u32,
}

enum State {
    /// No configuration accepted yet: requests only lose client steering
    /// headers and go to Envoy's own load balancer.
    Unconfigured,
    Configured(Box<Configured>),
}

/// Everything an accepted configuration builds, in one place.
struct Configured {
    /// Which accepted configuration this is (see [`FilterRoot::accepted`]).
    id: u32,
    settings: Settings,
    own_labels: Labels,
    clusters: Clusters,
    /// When the plugin was configured: interval sweeps count from here.
    configured_at: u64,
    /// Buffers reused by every request (the request path allocates only
    /// what the host hands over and what the request must remember).
    scratch: request::Scratch,
    /// `inventory.source: envoy` only.
    poller: Option<envoy::Poller>,
    /// `inventory.cluster`, when declared.
    declared: Option<routed::Declared>,
}

impl FilterRoot {
    pub fn new(seed: u64) -> Self {
        FilterRoot {
            state: State::Unconfigured,
            metrics: Metrics::default(),
            seed,
            accepted: 0,
        }
    }

    pub fn settings(&self) -> Option<&Settings> {
        self.configured().map(|c| &c.settings)
    }

    /// The proxy's own labels (empty before a configuration is accepted).
    pub fn own_labels(&self) -> Option<&Labels> {
        self.configured().map(|c| &c.own_labels)
    }

    /// The engine of one cluster, for tests and the harness.
    pub fn engine(&self, cluster: &str) -> Option<&Engine> {
        self.configured()?.clusters.get(cluster).map(|s| &s.engine)
    }

    fn configured(&self) -> Option<&Configured> {
        match &self.state {
            State::Configured(c) => Some(c),
            State::Unconfigured => None,
        }
    }

    /// `on_configure`: validate, learn the proxy's locality, load an inline
    /// inventory. A bad configuration is refused with one log line naming
    /// the field; the previous configuration (if any) stays in force, and
    /// Envoy fails the plugin or not as its `failStrategy` says.
    pub fn on_configure(&mut self, host: &mut dyn Host) -> bool {
        self.metrics.define(host);
        match self.build(host) {
            Ok(mut configured) => {
                self.accepted = self.accepted.wrapping_add(1);
                configured.id = self.accepted;
                self.state = State::Configured(Box::new(configured));
                true
            }
            Err(message) => {
                host.log(LogLevel::Error, &format!("locality-failover: {message}"));
                self.metrics.inc(host, Metric::ConfigErrors);
                false
            }
        }
    }

    /// Builds the configured state from the plugin configuration; the
    /// error is the log line's text.
    fn build(&self, host: &mut dyn Host) -> Result<Configured, String> {
        let bytes = host
            .plugin_configuration()
            .map_err(|e| format!("cannot read plugin configuration: {e}"))?
            .unwrap_or_default();
        let settings =
            Settings::from_bytes(&bytes).map_err(|e| format!("configuration refused: {e}"))?;
        for warning in crate::lint::warnings_for(&settings) {
            host.log(LogLevel::Warn, &format!("locality-failover: {warning}"));
        }
        let own_labels = node::own_labels(host, &settings);
        let poller = match &settings.inventory {
            InventorySource::Envoy(source) => Some(envoy::Poller::new(
                source.clone(),
                &settings.shared_prefix,
                self.seed,
            )),
            _ => None,
        };
        if !own_labels.contains_key(LABEL_REGION) && poller.is_none() {
            host.log(
                LogLevel::Warn,
                "locality-failover: the proxy's locality is unknown (no node locality, no `locality` in config): ranking treats its region/zone as empty",
            );
        }
        let mut configured = Configured {
            id: 0,
            clusters: Clusters::default(),
            configured_at: host.now_nanos(),
            scratch: request::Scratch::default(),
            declared: settings
                .declared_cluster
                .as_deref()
                .map(routed::Declared::new),
            own_labels,
            settings,
            poller,
        };
        if let InventorySource::Config(specs) = &configured.settings.inventory {
            // Validated by Settings already; an error here is not expected but handled.
            let inventory =
                Inventory::from_specs(specs).map_err(|e| format!("inventory.endpoints: {e}"))?;
            configured.install(host, &self.metrics, CONFIG_CLUSTER, inventory, self.seed);
        }
        let tick = configured
            .settings
            .policy
            .outlier
            .as_ref()
            .map(tick_period)
            .unwrap_or(INVENTORY_CHECK);
        let tick = match &configured.settings.inventory {
            // Ticks twice per poll period, so a poll is never a whole period late.
            InventorySource::Envoy(source) => tick.min(source.poll_interval / 2),
            _ => tick,
        };
        if let Err(e) = host.set_tick_period(tick) {
            host.log(LogLevel::Warn, &format!("locality-failover: no tick: {e}"));
        }
        Ok(configured)
    }

    /// `on_tick`: the requests counted in the VM go to Envoy's counters,
    /// interval sweeps run (the first VM to see one due runs it for all
    /// clusters' views), then every cluster's view is brought up to date.
    pub fn on_tick(&mut self, host: &mut dyn Host) {
        self.metrics.flush(host);
        let State::Configured(c) = &mut self.state else {
            return;
        };
        if c.poller.is_some() {
            c.envoy_tick(host, &self.metrics, self.seed);
        }
        if let Some(d) = &mut c.declared {
            d.check_next();
        }
        let now = host.now_nanos();
        for index in 0..c.clusters.len() {
            c.sweep(host, &self.metrics, index);
            c.refresh_view(host, &self.metrics, index, now, true);
        }
    }

    /// `on_http_call_response`: the admin's answer to this VM's poll.
    pub fn on_http_call_response(&mut self, host: &mut dyn Host, token: u32, body_size: usize) {
        if let State::Configured(c) = &mut self.state {
            c.envoy_answer(host, &self.metrics, token, body_size, self.seed);
        }
    }

    /// `on_http_request_headers`. Returns what the request must remember,
    /// or `None` when the filter leaves it alone (or answered it).
    pub fn on_request_headers(&mut self, host: &mut dyn Host) -> Option<RequestState> {
        match &mut self.state {
            State::Unconfigured => {
                request::strip_default_headers(&self.metrics, host);
                None
            }
            State::Configured(c) => c.on_request_headers(host, &self.metrics, self.seed),
        }
    }

    /// `on_http_response_headers`, for every response (`request` is the
    /// state of one the filter steered): with stateful-session steering,
    /// removes the session header Envoy may have written on it
    /// ([`log::strip_session_header`]). For a steered request, remembers
    /// `:status` for `on_log` (one header read instead of the
    /// `response.code` property there), and with `steering.attemptCount:
    /// responseHeader` the attempt count from the same buffer (instead of a
    /// property read in `on_log`).
    pub fn on_response_headers(&self, host: &mut dyn Host, request: Option<&mut RequestState>) {
        let Some(c) = self.configured() else {
            return;
        };
        let steering = &c.settings.steering;
        let moved = steering.mode == SteeringMode::StatefulSession
            && log::strip_session_header(host, &self.metrics, &steering.header, request.is_some());
        let Some(request) = request else {
            return;
        };
        request.moved = moved;
        let wants_attempts = steering.attempt_count == AttemptCount::ResponseHeader
            && steering.mode != SteeringMode::RouteHeader;
        if wants_attempts {
            if let Ok(Some(bytes)) = host.response_header_pairs() {
                for (name, value) in decode::header_pairs(&bytes) {
                    match name {
                        b":status" => request.status = decode::status(value),
                        ATTEMPT_COUNT_HEADER => request.attempts = decode::attempt_count(value),
                        _ => {}
                    }
                }
                return;
            }
        }
        if let Ok(Some(bytes)) = host.response_header(":status") {
            request.status = decode::status(&bytes);
        }
    }

    /// The addresses a request was steered to, pick first (for the
    /// harness; empty when its configuration or inventory is gone).
    pub fn request_addresses(&self, request: &RequestState) -> Vec<String> {
        let Some(c) = self.configured().filter(|c| c.id == request.config) else {
            return Vec::new();
        };
        let Some(state) = c.clusters.at(request.cluster) else {
            return Vec::new();
        };
        request
            .entries()
            .filter_map(|i| state.address(request.inventory, i).map(str::to_string))
            .collect()
    }

    /// A request steered to `addresses` of `cluster` (priority 0), as if
    /// `on_http_request_headers` had written them: for tests that drive
    /// `on_log` by hand. `None` for an unknown cluster or address.
    pub fn request_state(&self, cluster: &str, addresses: &[&str]) -> Option<RequestState> {
        let c = self.configured()?;
        let index =
            (0..c.clusters.len()).find(|i| c.clusters.at(*i).is_some_and(|s| s.name == cluster))?;
        let engine = &c.clusters.at(index)?.engine;
        let mut request = RequestState::new(c.id, index, engine.version(), 0);
        for address in addresses {
            request.push(engine.index_of(address)?);
        }
        Some(request)
    }

    /// `on_log`: attributes Envoy's final answer to the endpoints tried and
    /// feeds the shared outlier detector.
    pub fn on_log(&mut self, host: &mut dyn Host, request: &RequestState) {
        if let State::Configured(c) = &mut self.state {
            c.on_log(host, &self.metrics, request);
        }
    }
}

/// Ticks often enough that a sweep runs close to when it is due.
fn tick_period(cfg: &OutlierConfig) -> Duration {
    (cfg.interval / 10).clamp(Duration::from_millis(10), INVENTORY_CHECK)
}

/// A host call that failed on `what`: a warning and a host error counted;
/// the caller then carries on without it.
fn warn_host_error(
    host: &mut dyn Host,
    metrics: &Metrics,
    what: &str,
    error: &dyn std::fmt::Display,
) {
    host.log(
        LogLevel::Warn,
        &format!("locality-failover: {what}: {error}"),
    );
    metrics.inc(host, Metric::HostErrors);
}

/// FNV-1a 64: cheap change detection for metadata bytes and per-cluster seeds.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
