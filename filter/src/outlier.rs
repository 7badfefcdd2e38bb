//! Envoy outlier detection as a pure state machine (envoyproxy/envoy
//! `source/common/upstream/outlier_detection_impl.cc`): consecutive 5xx,
//! consecutive gateway failures, consecutive local-origin failures (split
//! mode), the ejection cap, backoff and the interval sweep.
//!
//! State is split the way it is shared between Envoy workers: [`Streaks`]
//! per endpoint (touched on every failure), and one [`EjectionTable`] for
//! the cluster (touched only when an endpoint is ejected or returns). The
//! shared-data layer stores each under its own key; this module only says
//! how they change. Time is nanoseconds on the host clock, passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::OutlierConfig;

/// What one upstream attempt did, as the outlier detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Http(u16),
    /// Connect failure or reset (a local-origin failure; 503 without the split).
    ConnectFailed,
    /// Request or per-try timeout (a local-origin failure; 504 without the split).
    Timeout,
}

impl Outcome {
    /// An answer that resets every streak (below 500).
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Http(code) if code < 500)
    }
}

/// A consecutive-failure detector that reached its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detection {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
}

/// Per-endpoint consecutive counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streaks {
    pub c5xx: u32,
    pub gateway: u32,
    pub local_origin: u32,
}

/// Up to two detections can fire on one outcome (5xx and gateway).
pub type Detections = [Option<Detection>; 2];

fn is_gateway_error(code: u16) -> bool {
    matches!(code, 502..=504)
}

impl Streaks {
    pub fn is_zero(&self) -> bool {
        *self == Streaks::default()
    }

    /// `putResult` / `putHttpResponseCode`: counts the outcome and returns the
    /// detectors whose counter reached the threshold exactly (`++c == t`).
    pub fn record(&mut self, outcome: Outcome, cfg: &OutlierConfig) -> Detections {
        if cfg.split_local_origin {
            match outcome {
                Outcome::ConnectFailed | Outcome::Timeout => {
                    self.local_origin = self.local_origin.saturating_add(1);
                    let hit = self.local_origin == cfg.consecutive_local_origin;
                    return [hit.then_some(Detection::ConsecutiveLocalOrigin), None];
                }
                // A response means the connection worked.
                Outcome::Http(code) => {
                    self.local_origin = 0;
                    return self.http(code, cfg);
                }
            }
        }
        let code = match outcome {
            Outcome::Http(code) => code,
            Outcome::ConnectFailed => 503,
            Outcome::Timeout => 504,
        };
        self.http(code, cfg)
    }

    fn http(&mut self, code: u16, cfg: &OutlierConfig) -> Detections {
        if !(500..600).contains(&code) {
            self.c5xx = 0;
            self.gateway = 0;
            return [None, None];
        }
        let mut out = [None, None];
        if is_gateway_error(code) {
            self.gateway = self.gateway.saturating_add(1);
            if self.gateway == cfg.consecutive_gateway {
                out[1] = Some(Detection::ConsecutiveGateway);
            }
        } else {
            self.gateway = 0;
        }
        self.c5xx = self.c5xx.saturating_add(1);
        if self.c5xx == cfg.consecutive_5xx {
            out[0] = Some(Detection::Consecutive5xx);
        }
        out
    }

    /// After a detection is handled Envoy resets that detector's counter,
    /// whether or not the host was ejected.
    pub fn reset(&mut self, detection: Detection) {
        match detection {
            Detection::Consecutive5xx => self.c5xx = 0,
            Detection::ConsecutiveGateway => self.gateway = 0,
            Detection::ConsecutiveLocalOrigin => self.local_origin = 0,
        }
    }
}

/// Outlier state of one endpoint that is, or recently was, ejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub ejected: bool,
    /// When the current (or last) ejection started, ns.
    pub ejected_at: u64,
    /// Multiplier of the base ejection time; grows on ejection, decays when healthy.
    pub backoff: u32,
    /// When the endpoint last came back, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unejected_at: Option<u64>,
    pub ejections: u32,
}

/// The cluster-wide ejection view, keyed by endpoint address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjectionTable {
    /// Bumped on every change; readers compare it to know when to rebuild.
    pub generation: u64,
    /// When the next interval sweep is due, ns (0: not armed yet).
    pub next_sweep: u64,
    pub hosts: BTreeMap<String, HostRecord>,
}

/// What happened to a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectResult {
    Ejected,
    /// Already ejected: nothing happens (and Envoy does not reset the counter).
    AlreadyEjected,
    /// `maxEjectionPercent` would be exceeded.
    Overflow,
    /// The endpoint is no longer in the cluster: ignored (Envoy's
    /// `onConsecutiveErrorWorker` drops detections for removed hosts).
    Gone,
    /// The detector is not enforced (e.g. gateway errors without `consecutiveGatewayErrors`).
    NotEnforced,
}

impl EjectionTable {
    pub fn is_ejected(&self, address: &str) -> bool {
        self.hosts.get(address).is_some_and(|h| h.ejected)
    }

    /// Ejected endpoints among those `present` in the inventory.
    pub fn active(&self, present: &dyn Fn(&str) -> bool) -> usize {
        self.hosts
            .iter()
            .filter(|(a, h)| h.ejected && present(a))
            .count()
    }

    /// Starts the interval timer if no worker has yet. Envoy starts it when
    /// the cluster is created; the filter counts intervals from `origin`
    /// (when the plugin was configured), so the first sweep is the first
    /// multiple of the interval after `now`, whenever the first request comes.
    pub fn arm(&mut self, now: u64, origin: u64, cfg: &OutlierConfig) -> bool {
        if self.next_sweep != 0 {
            return false;
        }
        let interval = nanos(cfg.interval).max(1);
        let origin = origin.min(now);
        let elapsed = now - origin;
        self.next_sweep = origin.saturating_add(
            (elapsed / interval)
                .saturating_add(1)
                .saturating_mul(interval),
        );
        self.generation = self.generation.wrapping_add(1);
        true
    }

    /// `onConsecutiveErrorWorker` + `ejectHost`. `total_hosts` counts every
    /// endpoint of the cluster, all priorities (the cap is cluster-wide).
    pub fn on_detection(
        &mut self,
        address: &str,
        detection: Detection,
        total_hosts: usize,
        present: &dyn Fn(&str) -> bool,
        now: u64,
        cfg: &OutlierConfig,
    ) -> EjectResult {
        if !present(address) {
            return EjectResult::Gone;
        }
        if self.is_ejected(address) {
            return EjectResult::AlreadyEjected;
        }
        let active = self.active(present);
        let max = f64::from(cfg.max_ejection_percent.min(100));
        let percent = 100.0 * (active as f64 + 1.0) / (total_hosts.max(1) as f64);
        if percent > max {
            return EjectResult::Overflow;
        }
        let enforced = match detection {
            Detection::Consecutive5xx => cfg.enforcing_5xx,
            Detection::ConsecutiveGateway => cfg.enforcing_gateway,
            Detection::ConsecutiveLocalOrigin => cfg.enforcing_local_origin,
        };
        if !enforced {
            return EjectResult::NotEnforced;
        }
        let base = nanos(cfg.base_ejection_time);
        let max_time = nanos(cfg.max_ejection_time);
        let record = self.hosts.entry(address.to_string()).or_default();
        record.ejected = true;
        record.ejected_at = now;
        record.ejections = record.ejections.saturating_add(1);
        if u64::from(record.backoff).saturating_mul(base) < max_time.saturating_add(base) {
            record.backoff += 1;
        }
        self.generation = self.generation.wrapping_add(1);
        EjectResult::Ejected
    }

    /// Whether the interval sweep is due at `now`.
    pub fn sweep_due(&self, now: u64) -> bool {
        self.next_sweep != 0 && now >= self.next_sweep
    }

    /// `onIntervalTimer`: returns ejected endpoints whose time is up
    /// (`min(base * backoff, max) <= now - ejected_at`), decays the backoff
    /// of endpoints healthy for a whole interval, forgets endpoints no longer
    /// `present`, and re-arms the timer one interval from now. Returns the
    /// addresses that came back (their streaks must be reset).
    pub fn sweep(
        &mut self,
        now: u64,
        present: &dyn Fn(&str) -> bool,
        cfg: &OutlierConfig,
    ) -> Vec<String> {
        let base = nanos(cfg.base_ejection_time);
        let max_time = nanos(cfg.max_ejection_time);
        let interval = nanos(cfg.interval);
        let mut back = Vec::new();
        let before = self.hosts.clone();
        self.hosts.retain(|address, _| present(address));
        for (address, h) in self.hosts.iter_mut() {
            if h.ejected {
                let due = base.saturating_mul(u64::from(h.backoff)).min(max_time);
                if due <= now.saturating_sub(h.ejected_at) {
                    h.ejected = false;
                    h.unejected_at = Some(now);
                    back.push(address.clone());
                }
            }
        }
        // Decay runs after the uneject pass, as in Envoy: a host unejected in
        // this sweep has `now - unejected_at == 0` and keeps its backoff.
        for h in self.hosts.values_mut() {
            if !h.ejected
                && h.unejected_at
                    .is_some_and(|t| now.saturating_sub(t) >= interval)
                && h.backoff > 0
            {
                h.backoff -= 1;
            }
        }
        self.hosts.retain(|_, h| h.ejected || h.backoff > 0);
        self.next_sweep = now.saturating_add(interval);
        // Readers rebuild on a new generation: bump it only when the
        // ejection state changed, not on every tick of the timer.
        if self.hosts != before {
            self.generation = self.generation.wrapping_add(1);
        }
        back
    }
}

pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "outlier_tests.rs"]
mod tests;
