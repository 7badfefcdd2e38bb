//! The outlier detector's sequencing, written once over a store: count an
//! outcome, hand each detection to the ejection table, reset the streak the
//! way Envoy does, and run the interval sweep.
//!
//! [`MemoryStore`] keeps the state in this VM (tests, fuzzing, one worker);
//! `crate::shared::SharedStore` keeps it in proxy-wasm shared data so that
//! every Envoy worker sees the same streaks and ejections.

use std::collections::HashMap;

use crate::config::OutlierConfig;
use crate::host::HostError;
use crate::outlier::{Detection, EjectResult, EjectionTable, Outcome, Streaks};

/// Read-modify-write access to outlier state. `f` may run more than once
/// (a shared store retries on CAS mismatch) and says whether it changed
/// anything; nothing is written when it did not.
pub trait OutlierStore {
    fn update_streaks(
        &mut self,
        address: &str,
        f: &mut dyn FnMut(&mut Streaks) -> bool,
    ) -> Result<(), HostError>;
    fn update_table(
        &mut self,
        f: &mut dyn FnMut(&mut EjectionTable) -> bool,
    ) -> Result<(), HostError>;
}

/// What the detector did with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    pub detections: Vec<(Detection, EjectResult)>,
}

impl Recorded {
    pub fn ejected(&self) -> bool {
        self.detections
            .iter()
            .any(|(_, r)| *r == EjectResult::Ejected)
    }
}

/// The cluster facts an ejection decision needs.
pub struct ClusterView<'a> {
    pub total_hosts: usize,
    pub present: &'a dyn Fn(&str) -> bool,
}

/// Counts one attempt's outcome for `address` and ejects on a detection.
pub fn record(
    store: &mut dyn OutlierStore,
    cfg: &OutlierConfig,
    address: &str,
    outcome: Outcome,
    now: u64,
    cluster: &ClusterView<'_>,
) -> Result<Recorded, HostError> {
    let mut detections = [None, None];
    store.update_streaks(address, &mut |s| {
        let before = *s;
        detections = s.record(outcome, cfg);
        *s != before
    })?;
    let mut out = Recorded::default();
    for detection in detections.into_iter().flatten() {
        let mut result = EjectResult::AlreadyEjected;
        store.update_table(&mut |t| {
            result = t.on_detection(
                address,
                detection,
                cluster.total_hosts,
                cluster.present,
                now,
                cfg,
            );
            result == EjectResult::Ejected
        })?;
        if !matches!(result, EjectResult::AlreadyEjected | EjectResult::Gone) {
            store.update_streaks(address, &mut |s| {
                let before = *s;
                s.reset(detection);
                *s != before
            })?;
        }
        out.detections.push((detection, result));
    }
    Ok(out)
}

/// Starts the cluster's interval timer if nobody has.
pub fn arm(
    store: &mut dyn OutlierStore,
    cfg: &OutlierConfig,
    now: u64,
    origin: u64,
) -> Result<(), HostError> {
    store.update_table(&mut |t| t.arm(now, origin, cfg))
}

/// Runs the interval sweep if it is due; returns the endpoints that came
/// back (their streaks are reset, as Envoy's `unejectHost` does).
pub fn sweep_if_due(
    store: &mut dyn OutlierStore,
    cfg: &OutlierConfig,
    now: u64,
    present: &dyn Fn(&str) -> bool,
) -> Result<Option<Vec<String>>, HostError> {
    let mut back = None;
    store.update_table(&mut |t| {
        if !t.sweep_due(now) {
            back = None;
            return false;
        }
        back = Some(t.sweep(now, present, cfg));
        true
    })?;
    if let Some(addresses) = &back {
        for address in addresses {
            store.update_streaks(address, &mut |s| {
                let changed = !s.is_zero();
                *s = Streaks::default();
                changed
            })?;
        }
    }
    Ok(back)
}

/// Outlier state held in this VM.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    pub streaks: HashMap<String, Streaks>,
    pub table: EjectionTable,
    /// Writes done, to check that successes write nothing.
    pub writes: u64,
}

impl OutlierStore for MemoryStore {
    fn update_streaks(
        &mut self,
        address: &str,
        f: &mut dyn FnMut(&mut Streaks) -> bool,
    ) -> Result<(), HostError> {
        let mut s = self.streaks.get(address).copied().unwrap_or_default();
        if f(&mut s) {
            self.writes += 1;
            self.streaks.insert(address.to_string(), s);
        }
        Ok(())
    }

    fn update_table(
        &mut self,
        f: &mut dyn FnMut(&mut EjectionTable) -> bool,
    ) -> Result<(), HostError> {
        let mut t = self.table.clone();
        if f(&mut t) {
            self.writes += 1;
            self.table = t;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
