//! The part of Envoy's router the filter relies on: the steering header
//! read as `override_host`, `stateful_session`, `ORIGINAL_DST` or a route
//! `cluster_header` would, retries, and the cluster's own load balancer.

use std::collections::BTreeMap;

use locality_failover::feedback::flags;

use super::{Behavior, SimEnvoy};

/// How the simulated router reads the filter's steering header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterSteering {
    /// `override_host` with a header source: `ip:port,ip:port`, each retry the next entry.
    OverrideHost { header: String, prefix: String },
    /// `stateful_session` header state: base64 of the host; the first
    /// attempt goes there when the cluster has it, retries to the cluster LB.
    StatefulSession { header: String, prefix: String },
    /// `ORIGINAL_DST` with `use_http_header`: every attempt to the one address.
    OriginalDst { header: String, prefix: String },
    /// Route `cluster_header`: the value names a backend.
    RouteHeader {
        header: String,
        backends: BTreeMap<String, Vec<String>>,
    },
}

/// The router's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub retry_on: Vec<String>,
}

impl RetryPolicy {
    fn retries(&self, attempt: &AttemptResult) -> bool {
        self.retry_on.iter().any(|c| match (c.as_str(), attempt) {
            (_, AttemptResult::Answered(code)) if *code < 500 => false,
            ("5xx", _) => true,
            ("gateway-error", AttemptResult::Answered(code)) => (502..=504).contains(code),
            (
                "gateway-error" | "connect-failure" | "reset" | "refused-stream",
                AttemptResult::ConnectFailed,
            ) => true,
            _ => false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptResult {
    Answered(u16),
    ConnectFailed,
}

impl SimEnvoy {
    /// The router: resolves the steering header to hosts and plays attempts.
    pub(super) fn route(
        &mut self,
        steering: Option<&str>,
    ) -> (Vec<String>, u32, u64, Option<String>) {
        let max_attempts = 1 + self.retry.as_ref().map_or(0, |r| r.attempts) as usize;
        let mut attempts = Vec::new();
        let (entries, same_address) = self.steered_entries(steering);
        let mut last = None;
        let mut result = AttemptResult::ConnectFailed;
        for i in 0..max_attempts {
            let address = if same_address {
                entries.first().cloned()
            } else {
                entries.get(i).cloned()
            };
            let address = match address.or_else(|| self.fallback()) {
                Some(a) => a,
                None => return (attempts, 503, flags::NO_HEALTHY_UPSTREAM, None),
            };
            attempts.push(address.clone());
            result = match self
                .upstreams
                .get(&address)
                .copied()
                .unwrap_or(Behavior::Refused)
            {
                Behavior::Healthy => AttemptResult::Answered(200),
                Behavior::Http(code) => AttemptResult::Answered(code),
                Behavior::Refused => AttemptResult::ConnectFailed,
            };
            last = Some(address);
            let retry = self.retry.as_ref().is_some_and(|r| r.retries(&result));
            if !retry || i + 1 == max_attempts {
                break;
            }
        }
        let retried_out = self.retry.is_some()
            && attempts.len() == max_attempts
            && self.retry.as_ref().is_some_and(|r| r.retries(&result));
        let exhausted = if retried_out {
            flags::UPSTREAM_RETRY_LIMIT_EXCEEDED
        } else {
            0
        };
        match result {
            AttemptResult::Answered(code) => (attempts, u32::from(code), exhausted, last),
            AttemptResult::ConnectFailed => (
                attempts,
                503,
                flags::UPSTREAM_CONNECTION_FAILURE | exhausted,
                last,
            ),
        }
    }

    /// The hosts the steering header names, in order, and whether every
    /// attempt goes to the first (`ORIGINAL_DST`).
    fn steered_entries(&self, steering: Option<&str>) -> (Vec<String>, bool) {
        match (&self.steering, steering) {
            (RouterSteering::OverrideHost { prefix, .. }, Some(v)) => {
                let entries = v
                    .split(',')
                    .map(|e| e.trim())
                    .map(|e| e.strip_prefix(prefix.as_str()).unwrap_or(e).to_string())
                    .filter(|e| self.cluster_hosts.contains(e))
                    .collect();
                (entries, false)
            }
            (RouterSteering::StatefulSession { prefix, .. }, Some(v)) => {
                // Only the first attempt; retries fall to the cluster LB.
                let entries = locality_failover::session::decode(v)
                    .map(|a| a.strip_prefix(prefix.as_str()).unwrap_or(&a).to_string())
                    .filter(|a| self.cluster_hosts.contains(a))
                    .into_iter()
                    .collect();
                (entries, false)
            }
            (RouterSteering::OriginalDst { prefix, .. }, Some(v)) => (
                vec![v.strip_prefix(prefix.as_str()).unwrap_or(v).to_string()],
                true,
            ),
            (RouterSteering::RouteHeader { backends, .. }, Some(v)) => {
                (backends.get(v).cloned().unwrap_or_default(), false)
            }
            _ => (Vec::new(), false),
        }
    }

    /// Envoy's fallback (or plain) load balancer: round robin over the cluster.
    fn fallback(&mut self) -> Option<String> {
        if self.cluster_hosts.is_empty() {
            return None;
        }
        let h = self
            .cluster_hosts
            .get(self.fallback_rr % self.cluster_hosts.len())
            .cloned();
        self.fallback_rr = self.fallback_rr.wrapping_add(1);
        h
    }
}
