//! The request path: strip any client steering header, pick, and write the
//! steering header Envoy acts on.

use crate::config::{
    Steering, SteeringMode, DEFAULT_ORIGINAL_DST_HEADER, DEFAULT_OVERRIDE_HEADER,
    DEFAULT_ROUTE_HEADER, DEFAULT_SESSION_HEADER,
};
use crate::engine::Engine;
use crate::host::{Host, LogLevel};
use crate::metrics::{Metric, Metrics};

use super::Configured;

/// Most entries a request remembers (`steering.max_hosts` is at most 16).
pub const MAX_LIST: usize = 16;

/// What a request carries from its headers to its end: indices, no
/// strings, so steering a request allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestState {
    /// Which accepted configuration steered it ([`super::FilterRoot`] counts them).
    pub(super) config: u32,
    /// The cluster's slot in the configuration's cluster table.
    pub(super) cluster: usize,
    /// The engine's inventory version `hosts` index into.
    pub(super) inventory: u32,
    /// Endpoint indices written, in order (pick first); empty in
    /// route-header mode (Envoy picks inside the backend).
    hosts: [u32; MAX_LIST],
    len: u8,
    pub priority: u32,
    /// `:status` from `on_http_response_headers`, when they went through
    /// the filter; `on_log` reads `response.code` otherwise.
    pub(super) status: Option<u16>,
    /// `x-envoy-attempt-count` from the response headers
    /// (`steering.attemptCount: responseHeader`); `on_log` reads
    /// `upstream.request_attempt_count` otherwise.
    pub(super) attempts: Option<u32>,
    /// Envoy served the request elsewhere than the pick (stateful-session:
    /// its session filter wrote the session header on the response, which
    /// it does only when the host that served is not the one the request
    /// named): `on_log` must read which host it was.
    pub(super) moved: bool,
}

impl RequestState {
    pub(super) fn new(config: u32, cluster: usize, inventory: u32, priority: u32) -> Self {
        RequestState {
            config,
            cluster,
            inventory,
            hosts: [0; MAX_LIST],
            len: 0,
            priority,
            status: None,
            attempts: None,
            moved: false,
        }
    }

    /// Appends an entry; entries past [`MAX_LIST`] are not remembered.
    pub(super) fn push(&mut self, index: usize) {
        let (Some(slot), Ok(index)) = (
            self.hosts.get_mut(usize::from(self.len)),
            u32::try_from(index),
        ) else {
            return;
        };
        *slot = index;
        self.len += 1;
    }

    /// The endpoint indices written, pick first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.hosts
            .iter()
            .take(usize::from(self.len))
            .map(|i| *i as usize)
    }

    pub fn first(&self) -> Option<usize> {
        self.entries().next()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Buffers the request path reuses.
#[derive(Default)]
pub(super) struct Scratch {
    hosts: Vec<usize>,
    value: String,
    pub key: String,
}

/// Why no steering value could be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteeringError {
    /// The pick list resolved to no endpoint.
    EmptyList,
    /// Route-header mode and the pick has no `backend`.
    NoBackend,
}

/// The steering header's value for a pick list (`hosts`, pick first), in
/// the encoding `steering.mode` needs, written into `value`. Pure: the
/// request path and the tests share it.
pub fn encode_steering(
    steering: &Steering,
    engine: &Engine,
    hosts: &[usize],
    value: &mut String,
) -> Result<(), SteeringError> {
    value.clear();
    match steering.mode {
        SteeringMode::OverrideHost | SteeringMode::OriginalDst => {
            let written = if steering.mode == SteeringMode::OverrideHost {
                hosts.len()
            } else {
                1
            };
            let addresses = hosts.iter().filter_map(|i| engine.endpoint(*i));
            for (k, e) in addresses.take(written).enumerate() {
                if k > 0 {
                    value.push(',');
                }
                value.push_str(&steering.address_prefix);
                value.push_str(&e.address);
            }
            if value.is_empty() {
                return Err(SteeringError::EmptyList);
            }
        }
        SteeringMode::StatefulSession => {
            let pick = hosts.first().and_then(|i| engine.endpoint(*i));
            let pick = pick.ok_or(SteeringError::EmptyList)?;
            crate::session::encode_into(&steering.address_prefix, &pick.address, value);
        }
        SteeringMode::RouteHeader => {
            let backend = hosts
                .first()
                .and_then(|i| engine.endpoint(*i))
                .and_then(|e| e.backend.as_deref())
                .ok_or(SteeringError::NoBackend)?;
            value.push_str(backend);
        }
    }
    Ok(())
}

impl Configured {
    /// Steers one request. The steering header is written with a replace,
    /// which drops every value a client sent; when nothing is written the
    /// header is removed. Neither returns a buffer, so a client's header is
    /// never read.
    pub(super) fn on_request_headers(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        seed: u64,
    ) -> Option<RequestState> {
        let steered = self.steer(host, metrics, seed);
        if steered.is_none() && !remove_client_header(metrics, host, &self.settings.steering.header)
        {
            return None;
        }
        steered
    }

    fn steer(&mut self, host: &mut dyn Host, metrics: &Metrics, seed: u64) -> Option<RequestState> {
        // One clock read serves the whole callback.
        let now = host.now_nanos();
        let index = self.cluster_for_request(host, metrics, now, seed)?;
        if self
            .clusters
            .at(index)
            .is_some_and(|s| s.next_sweep != 0 && now >= s.next_sweep)
        {
            self.sweep(host, metrics, index);
        }
        self.refresh_view(host, metrics, index, now, false);
        self.pick_and_steer(host, metrics, index)
    }

    /// Picks from the cluster's engine and writes the steering header.
    fn pick_and_steer(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        index: usize,
    ) -> Option<RequestState> {
        let steering = &self.settings.steering;
        let state = self.clusters.at_mut(index)?;
        let scratch = &mut self.scratch;
        let Some(pick) = state
            .engine
            .decide_into(steering.max_hosts, &mut scratch.hosts)
        else {
            metrics.inc(host, Metric::NoHealthy);
            let _ = host.send_local_reply(503, "no healthy upstream");
            return None;
        };
        if pick.panic && steering.mode == SteeringMode::StatefulSession {
            // Envoy's session filter ignores a host it holds unhealthy, so a
            // priority in panic is left to Envoy's own balancer.
            return None;
        }
        match encode_steering(steering, &state.engine, &scratch.hosts, &mut scratch.value) {
            Ok(()) => {}
            Err(SteeringError::EmptyList) => return None,
            Err(SteeringError::NoBackend) => {
                metrics.inc(host, Metric::InventoryErrors);
                host.log(LogLevel::Warn, "locality-failover: route-header mode needs a `backend` on every endpoint; request left to the route");
                return None;
            }
        }
        let mut request = RequestState::new(self.id, index, state.engine.version(), pick.priority);
        if steering.mode != SteeringMode::RouteHeader {
            let known = scratch
                .hosts
                .iter()
                .filter(|i| state.engine.endpoint(**i).is_some());
            known.for_each(|i| request.push(*i));
        }
        if let Err(e) = host.set_request_header(&steering.header, Some(&scratch.value)) {
            host.log(
                LogLevel::Error,
                &format!("locality-failover: cannot set {}: {e}", steering.header),
            );
            metrics.inc(host, Metric::HostErrors);
            return None;
        }
        state.engine.begin(pick.endpoint);
        metrics.request(host, pick.priority);
        Some(request)
    }
}

/// Unconfigured: the default steering header names are dropped and the
/// request is left to Envoy's own load balancer.
pub(super) fn strip_default_headers(metrics: &Metrics, host: &mut dyn Host) {
    for header in [
        DEFAULT_OVERRIDE_HEADER,
        DEFAULT_ORIGINAL_DST_HEADER,
        DEFAULT_ROUTE_HEADER,
        DEFAULT_SESSION_HEADER,
    ] {
        if !remove_client_header(metrics, host, header) {
            return;
        }
    }
}

/// Removes any client-sent value of a steering header (a remove returns no
/// buffer, so it is not read first). When that cannot be done the request
/// is answered 503 here (fail closed) and `false` is returned.
fn remove_client_header(metrics: &Metrics, host: &mut dyn Host, header: &str) -> bool {
    match host.set_request_header(header, None) {
        Ok(()) => true,
        Err(e) => {
            host.log(
                LogLevel::Error,
                &format!("locality-failover: cannot remove client {header}: {e}; answering 503"),
            );
            metrics.inc(host, Metric::HostErrors);
            let _ = host.send_local_reply(503, "steering header could not be removed");
            false
        }
    }
}
