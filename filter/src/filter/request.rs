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

/// What a request carries from its headers to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestState {
    pub cluster: String,
    /// Endpoint addresses written, in order (pick first).
    pub list: Vec<String>,
    pub priority: u32,
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
    pub(super) fn on_request_headers(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        seed: u64,
    ) -> Option<RequestState> {
        // Never let a client choose the upstream: drop any steering value it
        // sent before anything else.
        if !strip_client_header(metrics, host, &self.settings.steering.header) {
            return None;
        }
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
        self.refresh_ejections(host, metrics, index);
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
        let list = match steering.mode {
            SteeringMode::RouteHeader => Vec::new(),
            _ => scratch
                .hosts
                .iter()
                .filter_map(|i| state.engine.endpoint(*i).map(|e| e.address.clone()))
                .collect(),
        };
        state.engine.begin(pick.endpoint);
        if let Err(e) = host.set_request_header(&steering.header, Some(&scratch.value)) {
            host.log(
                LogLevel::Error,
                &format!("locality-failover: cannot set {}: {e}", steering.header),
            );
            metrics.inc(host, Metric::HostErrors);
            return None;
        }
        metrics.request(host, pick.priority);
        Some(RequestState {
            cluster: state.name.clone(),
            list,
            priority: pick.priority,
        })
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
        if !strip_client_header(metrics, host, header) {
            return;
        }
    }
}

/// Removes a client-sent steering header. When that cannot be done the
/// request is answered 503 here (fail closed) and `false` is returned.
fn strip_client_header(metrics: &Metrics, host: &mut dyn Host, header: &str) -> bool {
    let present = match host.request_header(header) {
        Ok(v) => v.is_some(),
        // Cannot tell: remove it anyway.
        Err(_) => true,
    };
    if !present {
        return true;
    }
    match host.set_request_header(header, None) {
        Ok(()) => {
            metrics.inc(host, Metric::ClientHeaderRemoved);
            true
        }
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
