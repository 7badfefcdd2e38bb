//! The filter's metrics. Envoy shows them as `wasmcustom.<name>` in
//! `/stats` and `/stats/prometheus`.

use std::cell::Cell;

use crate::host::{Host, LogLevel, MetricKind};

/// Priorities reported one by one; deeper ones share the last counter.
pub const PRIORITY_COUNTERS: usize = 6;
/// Steered requests a VM counts before it adds them to Envoy's counters
/// without waiting for the tick (a VM whose tick could not be set).
pub const FLUSH_AT: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Requests whose pick was not in priority 0.
    Failovers,
    Ejections,
    Unejections,
    ConfigErrors,
    InventoryErrors,
    InventoryUpdates,
    /// No endpoint could be picked: answered 503 "no healthy upstream".
    NoHealthy,
    /// Requests for a cluster without an inventory: left alone.
    Passthrough,
    /// Requests that Envoy retried onto another entry of the list.
    Retried,
    HostErrors,
    /// An admin poll (`inventory.source: envoy`) failed or was refused:
    /// the last good inventory stays.
    InventoryPollErrors,
}

impl Metric {
    const ALL: [Metric; 11] = [
        Metric::Failovers,
        Metric::Ejections,
        Metric::Unejections,
        Metric::ConfigErrors,
        Metric::InventoryErrors,
        Metric::InventoryUpdates,
        Metric::NoHealthy,
        Metric::Passthrough,
        Metric::Retried,
        Metric::HostErrors,
        Metric::InventoryPollErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Failovers => "locality_failover.failovers",
            Metric::Ejections => "locality_failover.ejections",
            Metric::Unejections => "locality_failover.unejections",
            Metric::ConfigErrors => "locality_failover.config_errors",
            Metric::InventoryErrors => "locality_failover.inventory_errors",
            Metric::InventoryUpdates => "locality_failover.inventory_updates",
            Metric::NoHealthy => "locality_failover.no_healthy_upstream",
            Metric::Passthrough => "locality_failover.passthrough",
            Metric::Retried => "locality_failover.retried",
            Metric::HostErrors => "locality_failover.host_errors",
            Metric::InventoryPollErrors => "locality_failover.inventory_poll_errors",
        }
    }
}

/// Metric ids, defined once per VM. A metric the host refused to define
/// is skipped silently after one log line.
///
/// The per-request counters (`requests.priority_N`, `failovers`) are
/// counted in the VM and added to Envoy's on every tick ([`Self::flush`]):
/// one host call per tick instead of one per request, so `/stats` shows
/// them up to one tick period (at most 1 s) late. Every other counter is
/// Envoy's at once.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: Vec<Option<u32>>,
    priority_ids: Vec<Option<u32>>,
    /// Steered requests not yet added, by priority counter.
    pending: [Cell<u64>; PRIORITY_COUNTERS],
    pending_failovers: Cell<u64>,
}

impl Metrics {
    pub fn define(&mut self, host: &mut dyn Host) {
        if !self.ids.is_empty() {
            return;
        }
        self.ids = Metric::ALL.iter().map(|m| define(host, m.name())).collect();
        self.priority_ids = (0..PRIORITY_COUNTERS)
            .map(|p| define(host, &format!("locality_failover.requests.priority_{p}")))
            .collect();
    }

    fn id(&self, metric: Metric) -> Option<u32> {
        let index = Metric::ALL.iter().position(|m| *m == metric)?;
        self.ids.get(index).copied().flatten()
    }

    pub fn inc(&self, host: &mut dyn Host, metric: Metric) {
        self.add(host, metric, 1);
    }

    pub fn add(&self, host: &mut dyn Host, metric: Metric, by: i64) {
        if let Some(id) = self.id(metric) {
            let _ = host.increment_metric(id, by);
        }
    }

    /// Counts a steered request by the priority it went to (in the VM;
    /// see [`Self::flush`]).
    pub fn request(&self, host: &mut dyn Host, priority: u32) {
        let slot = (priority as usize).min(PRIORITY_COUNTERS - 1);
        let Some(pending) = self.pending.get(slot) else {
            return;
        };
        let n = pending.get() + 1;
        pending.set(n);
        if priority > 0 {
            self.pending_failovers.set(self.pending_failovers.get() + 1);
        }
        if n >= FLUSH_AT {
            self.flush(host);
        }
    }

    /// Adds the requests counted in the VM to Envoy's counters (`on_tick`).
    pub fn flush(&self, host: &mut dyn Host) {
        for (pending, id) in self.pending.iter().zip(&self.priority_ids) {
            let n = pending.replace(0);
            if let (true, Some(id)) = (n > 0, id) {
                let _ = host.increment_metric(*id, n as i64);
            }
        }
        let failovers = self.pending_failovers.replace(0);
        if failovers > 0 {
            self.add(host, Metric::Failovers, failovers as i64);
        }
    }
}

fn define(host: &mut dyn Host, name: &str) -> Option<u32> {
    match host.define_metric(MetricKind::Counter, name) {
        Ok(id) => Some(id),
        Err(e) => {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: metric {name}: {e}"),
            );
            None
        }
    }
}
