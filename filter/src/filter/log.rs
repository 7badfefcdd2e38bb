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
        if request.config != self.id {
            // Steered under a configuration since replaced: its cluster
            // table and endpoint indices are gone.
            return;
        }
        let Some(state) = self.clusters.at(request.cluster) else {
            return;
        };
        // The endpoints the request was steered to are unknown when the
        // inventory changed twice while it was in flight.
        let inventory = request.inventory;
        if !request
            .entries()
            .all(|i| state.address(inventory, i).is_some())
        {
            return;
        }
        // In route-header mode Envoy spreads attempts inside a backend and
        // only the last one is attributed: the count is not needed.
        let route_header = self.settings.steering.mode == SteeringMode::RouteHeader;
        let answer = Answer {
            code: request.status.unwrap_or_else(|| read_code(host)),
            attempts: (!route_header)
                .then(|| {
                    request
                        .attempts
                        .map(u64::from)
                        .or_else(|| read_u64(host, properties::ATTEMPT_COUNT))
                })
                .flatten(),
        };
        if self.unchanged_success(host, request, answer) {
            return;
        }
        self.attribute_and_record(host, metrics, request, answer);
    }

    /// The full path: reads what else Envoy says about the answer,
    /// attributes it to the entries tried and feeds the detector.
    fn attribute_and_record(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        request: &RequestState,
        known: Answer,
    ) {
        let Some(state) = self.clusters.at_mut(request.cluster) else {
            return;
        };
        let list: Vec<String> = request
            .entries()
            .filter_map(|i| state.address(request.inventory, i).map(str::to_string))
            .collect();
        let shape = retry_shape(self.settings.steering.mode);
        let answer = read_answer(
            host,
            &self.settings.steering.address_prefix,
            list.first(),
            shape,
            known,
        );
        if let Some(first) = request.first() {
            state.end(request.inventory, first);
        }
        let outcomes = attribute(&list, &answer, shape);
        let moved = list
            .first()
            .zip(answer.upstream.as_ref())
            .is_some_and(|(a, b)| a != b);
        if outcomes.len() > 1 || moved {
            metrics.inc(host, Metric::Retried);
        }
        let Some(outlier) = &self.settings.policy.outlier else {
            return;
        };
        if outcomes.iter().any(|(_, o)| !o.is_success()) {
            // This VM is about to start streaks: nothing it knew clean stays so.
            state.forget_clean();
        }
        let (ejected, errors) = record_outcomes(host, state, outlier, &outcomes);
        if !ejected.is_empty() {
            for (address, why) in &ejected {
                host.log(
                    LogLevel::Info,
                    &crate::logline::ejected(&state.name, address, why),
                );
            }
            metrics.add(host, Metric::Ejections, ejected.len() as i64);
            let now = host.now_nanos();
            self.refresh_view(host, metrics, request.cluster, now, true);
        }
        if errors > 0 {
            host.log(
                LogLevel::Warn,
                "locality-failover: shared outlier state could not be updated",
            );
            metrics.add(host, Metric::HostErrors, errors);
        }
    }

    /// The common case, settled with the status (from the response headers),
    /// the attempt count and at most one shared read, and no allocation
    /// besides the host's buffers: a single attempt, to the first entry of
    /// the list (with stateful-session: no session header came back, so
    /// Envoy honoured the pick), answered below 500, for an endpoint whose
    /// streaks that success does not change. An endpoint this VM knows to
    /// have no streak (see [`super::cluster::ClusterState::is_clean`])
    /// needs no shared read.
    /// Returns `false` (having changed nothing) when the full path is needed.
    fn unchanged_success(
        &mut self,
        host: &mut dyn Host,
        request: &RequestState,
        answer: Answer,
    ) -> bool {
        if self.settings.steering.mode == SteeringMode::RouteHeader
            || request.moved
            || answer.attempts != Some(1)
            || !(100..500).contains(&answer.code)
        {
            return false;
        }
        let Some(first) = request.first() else {
            return false;
        };
        let Some(state) = self.clusters.at_mut(request.cluster) else {
            return true;
        };
        if let Some(outlier) = &self.settings.policy.outlier {
            let current = request.inventory == state.engine.version();
            let Some(address) = state.address(request.inventory, first) else {
                return false;
            };
            // Known clean first: it is an index compare, `contains` a hash lookup.
            if !(current && state.is_clean(first)) && state.engine.contains(address) {
                let key = &mut self.scratch.key;
                state.keys.streak_into(key, address);
                let Ok(streaks) = shared::read_streaks(host, key) else {
                    return false;
                };
                let mut next = streaks;
                let detections = next.record(Outcome::Http(answer.code), outlier);
                if next != streaks || detections != [None, None] {
                    return false;
                }
                if current && streaks.is_zero() {
                    state.mark_clean(first);
                }
            }
        }
        state.end(request.inventory, first);
        true
    }
}

/// What `on_log` knows before deciding between the common case and the
/// full path.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// The downstream status (0 when there is none).
    code: u16,
    /// `x-envoy-attempt-count` when the response headers carried it, else
    /// `upstream.request_attempt_count`.
    attempts: Option<u64>,
}

/// Envoy's `stateful_session` header state writes the session header on a
/// response whose host is not the one the request named
/// (`HeaderBasedSessionStateFactory::SessionStateImpl::onUpdate`): a pick
/// it did not honour (it held the host unhealthy, or no longer has it), a
/// retry elsewhere, a request the filter did not steer. Its value is an
/// upstream's address, which the client has no use for (the filter strips
/// the header from requests): it is removed. Returns whether a `steered`
/// request's response carried it, i.e. Envoy served it elsewhere than the
/// pick (on a failed read too: `on_log` then reads where it went). A
/// request the filter did not steer costs one remove, no read.
pub(super) fn strip_session_header(
    host: &mut dyn Host,
    metrics: &Metrics,
    header: &str,
    steered: bool,
) -> bool {
    if steered {
        match host.response_header(header) {
            Ok(None) => return false,
            Ok(Some(_)) => {}
            Err(e) => super::warn_host_error(host, metrics, "session response header", &e),
        }
    }
    if let Err(e) = host.remove_response_header(header) {
        super::warn_host_error(host, metrics, "session response header", &e);
    }
    steered
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
/// A success on an endpoint known clean changes nothing and is skipped; a
/// success that leaves a streak at zero makes the endpoint known clean.
fn record_outcomes(
    host: &mut dyn Host,
    state: &mut ClusterState,
    outlier: &OutlierConfig,
    outcomes: &[(String, Outcome)],
) -> (Ejected, i64) {
    let mut clean = Vec::new();
    let result = record_each(host, state, outlier, outcomes, &mut clean);
    for index in clean {
        state.mark_clean(index);
    }
    result
}

fn record_each(
    host: &mut dyn Host,
    state: &ClusterState,
    outlier: &OutlierConfig,
    outcomes: &[(String, Outcome)],
    clean: &mut Vec<usize>,
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
        let Some(index) = engine.index_of(address) else {
            continue;
        };
        if outcome.is_success() && state.is_clean(index) {
            continue;
        }
        let recorded = detector::record(&mut store, outlier, address, *outcome, now, &view);
        let zero = store.last_streaks.is_some_and(|s| s.is_zero());
        if outcome.is_success() && zero && recorded.as_ref().is_ok_and(|r| r.detections.is_empty())
        {
            clean.push(index);
        }
        match recorded {
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

/// Reads the rest of Envoy's final answer. The common case, one attempt
/// answered below 500, needs nothing more: the attempt went to the first
/// entry the filter wrote, and no response flag can change its outcome.
fn read_answer(
    host: &dyn Host,
    address_prefix: &str,
    first: Option<&String>,
    shape: RetryShape,
    known: Answer,
) -> FinalAnswer {
    let Answer { code, attempts } = known;
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
