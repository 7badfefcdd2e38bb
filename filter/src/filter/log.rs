//! The log path: Envoy's final answer, attributed to the endpoints tried,
//! feeds the shared outlier detector.

use crate::config::{OutlierConfig, SteeringMode};
use crate::detector::{self, ClusterView};
use crate::feedback::{attribute, FinalAnswer, RetryShape};
use crate::host::{decode, Host, LogLevel};
use crate::metrics::{Metric, Metrics};
use crate::outlier::{Detection, EjectResult, Outcome};
use crate::properties;
use crate::shared::{self, SharedStore};

use super::cluster::ClusterState;
use super::{Configured, RequestState};

impl Configured {
    pub(super) fn on_log(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        request: &RequestState,
    ) {
        if self.unchanged_success(host, request) {
            return;
        }
        let shape = retry_shape(self.settings.steering.mode);
        let answer = read_answer(
            host,
            &self.settings.steering.address_prefix,
            request.list.first(),
            shape,
        );
        let index = self.clusters.find(&request.cluster);
        let state = index.and_then(|i| self.clusters.at_mut(i));
        if let (Some(state), Some(first)) = (state, request.list.first()) {
            state.engine.end(first);
        }
        let outcomes = attribute(&request.list, &answer, shape);
        let moved = request
            .list
            .first()
            .zip(answer.upstream.as_ref())
            .is_some_and(|(a, b)| a != b);
        if outcomes.len() > 1 || moved {
            metrics.inc(host, Metric::Retried);
        }
        let Some(outlier) = &self.settings.policy.outlier else {
            return;
        };
        let Some((index, state)) = index.and_then(|i| Some((i, self.clusters.at(i)?))) else {
            return;
        };
        let (ejected, errors) = record_outcomes(host, state, outlier, &outcomes);
        if !ejected.is_empty() {
            for (address, why) in &ejected {
                host.log(
                    LogLevel::Info,
                    &crate::logline::ejected(&request.cluster, address, why),
                );
            }
            metrics.add(host, Metric::Ejections, ejected.len() as i64);
            self.refresh_ejections(host, metrics, index);
        }
        if errors > 0 {
            host.log(
                LogLevel::Warn,
                "locality-failover: shared outlier state could not be updated",
            );
            metrics.add(host, Metric::HostErrors, errors);
        }
    }

    /// The common case, settled with two property reads and one shared read
    /// and no allocation besides the host's buffers: a single attempt, to
    /// the first entry of the list, answered below 500, for an endpoint whose
    /// streaks that success does not change. Returns `false` (having changed
    /// nothing) when the full path is needed.
    fn unchanged_success(&mut self, host: &mut dyn Host, request: &RequestState) -> bool {
        if self.settings.steering.mode == SteeringMode::RouteHeader {
            return false;
        }
        let Some(first) = request.list.first() else {
            return false;
        };
        let attempts = read_u64(host, properties::ATTEMPT_COUNT);
        if attempts != Some(1) {
            return false;
        }
        let code = read_code(host);
        if !(100..500).contains(&code) {
            return false;
        }
        let Some(index) = self.clusters.find(&request.cluster) else {
            return true;
        };
        let Some(state) = self.clusters.at_mut(index) else {
            return true;
        };
        if let Some(outlier) = &self.settings.policy.outlier {
            if state.engine.contains(first) {
                let key = &mut self.scratch.key;
                state.keys.streak_into(key, first);
                let Ok(current) = shared::read_streaks(host, key) else {
                    return false;
                };
                let mut next = current;
                let detections = next.record(Outcome::Http(code), outlier);
                if next != current || detections != [None, None] {
                    return false;
                }
            }
        }
        state.engine.end(first);
        true
    }
}

/// How Envoy's retries move through what the filter wrote.
fn retry_shape(mode: SteeringMode) -> RetryShape {
    match mode {
        SteeringMode::OverrideHost => RetryShape::NextEntry,
        SteeringMode::OriginalDst => RetryShape::SameAddress,
        SteeringMode::RouteHeader => RetryShape::Unknown,
        SteeringMode::StatefulSession => RetryShape::PickThenBalancer,
    }
}

type Ejected = Vec<(String, Vec<Detection>)>;

/// Counts each outcome in the shared streaks; returns the endpoints this
/// request ejected (with the detectors that fired) and the failed updates.
fn record_outcomes(
    host: &mut dyn Host,
    state: &ClusterState,
    outlier: &OutlierConfig,
    outcomes: &[(String, Outcome)],
) -> (Ejected, i64) {
    let engine = &state.engine;
    let present = |a: &str| engine.contains(a);
    let view = ClusterView {
        total_hosts: engine.inventory().len(),
        present: &present,
    };
    // The clock only matters when a failure may eject.
    let now = if outcomes.iter().all(|(_, o)| o.is_success()) {
        0
    } else {
        host.now_nanos()
    };
    let mut ejected = Vec::new();
    let mut errors = 0;
    let mut store = SharedStore::new(host, &state.keys);
    for (address, outcome) in outcomes {
        if !engine.contains(address) {
            continue;
        }
        match detector::record(&mut store, outlier, address, *outcome, now, &view) {
            Ok(r) if r.ejected() => ejected.push((
                address.clone(),
                r.detections
                    .iter()
                    .filter(|(_, x)| *x == EjectResult::Ejected)
                    .map(|(d, _)| *d)
                    .collect(),
            )),
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    (ejected, errors)
}

fn read_u64(host: &dyn Host, path: &[&str]) -> Option<u64> {
    host.property(path)
        .ok()
        .flatten()
        .and_then(|b| decode::u64_le(&b))
}

/// The downstream status, 0 when there is none.
fn read_code(host: &dyn Host) -> u16 {
    host.property(properties::RESPONSE_CODE)
        .ok()
        .flatten()
        .and_then(|b| decode::i64_le(&b))
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(0)
}

/// Reads Envoy's final answer. The common case, one attempt answered below
/// 500, needs two property reads: the attempt went to the first entry the
/// filter wrote, and no response flag can change its outcome.
fn read_answer(
    host: &dyn Host,
    address_prefix: &str,
    first: Option<&String>,
    shape: RetryShape,
) -> FinalAnswer {
    let code = read_code(host);
    let attempts = read_u64(host, properties::ATTEMPT_COUNT);
    let pinned = matches!(shape, RetryShape::NextEntry | RetryShape::SameAddress);
    if let (Some(1), Some(first), true) = (attempts, first, pinned) {
        if (100..500).contains(&code) {
            return FinalAnswer {
                code,
                flags: 0,
                upstream: Some(first.clone()),
                attempts: 1,
            };
        }
    }
    let flags = read_u64(host, properties::RESPONSE_FLAGS).unwrap_or(0);
    let upstream = host
        .property(properties::UPSTREAM_ADDRESS)
        .ok()
        .flatten()
        .and_then(|b| decode::string(&b))
        .map(|a| {
            a.strip_prefix(address_prefix)
                .map(str::to_string)
                .unwrap_or(a)
        });
    FinalAnswer {
        code,
        flags,
        attempts: attempts.unwrap_or(if upstream.is_some() { 1 } else { 0 }),
        upstream,
    }
}
