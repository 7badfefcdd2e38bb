//! The filter's metrics. Envoy shows them as `wasmcustom.<name>` in
//! `/stats` and `/stats/prometheus`.

use crate::host::{Host, LogLevel, MetricKind};

/// Priorities reported one by one; deeper ones share the last counter.
pub const PRIORITY_COUNTERS: usize = 6;

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
    /// A client sent the steering header; it was removed.
    ClientHeaderRemoved,
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
    const ALL: [Metric; 12] = [
        Metric::Failovers,
        Metric::Ejections,
        Metric::Unejections,
        Metric::ConfigErrors,
        Metric::InventoryErrors,
        Metric::InventoryUpdates,
        Metric::NoHealthy,
        Metric::ClientHeaderRemoved,
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
            Metric::ClientHeaderRemoved => "locality_failover.client_header_removed",
            Metric::Passthrough => "locality_failover.passthrough",
            Metric::Retried => "locality_failover.retried",
            Metric::HostErrors => "locality_failover.host_errors",
            Metric::InventoryPollErrors => "locality_failover.inventory_poll_errors",
        }
    }
}

/// Metric ids, defined once per VM. A metric the host refused to define
/// is skipped silently after one log line.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: Vec<Option<u32>>,
    priority_ids: Vec<Option<u32>>,
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

    /// Counts a steered request by the priority it went to.
    pub fn request(&self, host: &mut dyn Host, priority: u32) {
        let slot = (priority as usize).min(PRIORITY_COUNTERS - 1);
        if let Some(id) = self.priority_ids.get(slot).copied().flatten() {
            let _ = host.increment_metric(id, 1);
        }
        if priority > 0 {
            self.inc(host, Metric::Failovers);
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
