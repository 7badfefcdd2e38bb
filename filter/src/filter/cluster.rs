//! Per-cluster state: the engine, where its inventory came from, and the
//! cluster's view of the shared ejection table.

use crate::detector;
use crate::engine::Engine;
use crate::host::{Host, LogLevel};
use crate::inventory::{Inventory, InventoryError};
use crate::metrics::{Metric, Metrics};
use crate::outlier::EjectionTable;
use crate::properties;
use crate::shared::{self, ClusterKeys, SharedStore};

use super::{fnv1a, Configured, CONFIG_CLUSTER, INVENTORY_CHECK};

pub(super) struct ClusterState {
    pub name: String,
    pub engine: Engine,
    /// Hash of the metadata bytes the inventory was decoded from.
    metadata_hash: Option<u64>,
    /// The inventory's `revision` leaf as last read, when the control plane sets one.
    revision: Option<Vec<u8>>,
    checked_at: u64,
    /// When the cached ejection table says the next sweep is due.
    pub next_sweep: u64,
    pub keys: ClusterKeys,
}

impl ClusterState {
    /// Takes a freshly read ejection table as this VM's view. The one place
    /// a table reaches the engine.
    pub fn adopt(&mut self, table: &EjectionTable) {
        self.next_sweep = table.next_sweep;
        self.engine.apply_table(table);
    }
}

/// The clusters one VM serves, looked up by name. Usually one or two: a
/// vector scanned from the last hit beats hashing the name per request.
#[derive(Default)]
pub(super) struct Clusters {
    states: Vec<ClusterState>,
    last: usize,
}

impl Clusters {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn find(&mut self, name: &str) -> Option<usize> {
        if self.states.get(self.last).is_some_and(|s| s.name == name) {
            return Some(self.last);
        }
        let index = self.states.iter().position(|s| s.name == name)?;
        self.last = index;
        Some(index)
    }

    pub fn get(&self, name: &str) -> Option<&ClusterState> {
        self.states.iter().find(|s| s.name == name)
    }

    pub fn at(&self, index: usize) -> Option<&ClusterState> {
        self.states.get(index)
    }

    pub fn at_mut(&mut self, index: usize) -> Option<&mut ClusterState> {
        self.states.get_mut(index)
    }

    fn push(&mut self, state: ClusterState) -> usize {
        self.states.push(state);
        self.states.len() - 1
    }
}

impl Configured {
    /// Installs an inventory for `name`: a new engine for a new cluster, a
    /// new inventory for a known one (its balancer state carries over).
    /// Creates the cluster's shared keys and arms the sweep timer.
    pub(super) fn install(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        name: &str,
        inventory: Inventory,
        seed: u64,
    ) -> usize {
        let index = match self.clusters.find(name) {
            Some(index) => {
                if let Some(state) = self.clusters.at_mut(index) {
                    state.engine.set_inventory(inventory, None);
                }
                index
            }
            None => self.clusters.push(ClusterState {
                name: name.to_string(),
                engine: Engine::new(
                    self.settings.policy.clone(),
                    self.own_labels.clone(),
                    inventory,
                    seed,
                ),
                metadata_hash: None,
                revision: None,
                checked_at: 0,
                next_sweep: 0,
                keys: ClusterKeys::new(&self.settings.shared_prefix, name),
            }),
        };
        self.prepare_shared(host, metrics, index);
        index
    }

    /// Creates the shared keys for an inventory and arms the sweep timer.
    fn prepare_shared(&mut self, host: &mut dyn Host, metrics: &Metrics, index: usize) {
        let Some(outlier) = &self.settings.policy.outlier else {
            return;
        };
        let Some(state) = self.clusters.at(index) else {
            return;
        };
        let now = host.now_nanos();
        let mut store = SharedStore::new(host, &state.keys);
        let addresses = state.engine.inventory().endpoints().iter();
        let result = store
            .ensure_streaks(addresses.map(|e| e.address.as_str()))
            .and_then(|()| detector::arm(&mut store, outlier, now, self.configured_at));
        if let Err(e) = result {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: shared data for {}: {e}", state.name),
            );
            metrics.inc(host, Metric::HostErrors);
        }
    }

    /// Runs the interval sweep if it is due (the first VM to see it due
    /// runs it for all), then adopts the resulting table.
    pub(super) fn sweep(&mut self, host: &mut dyn Host, metrics: &Metrics, index: usize) {
        let Some(outlier) = &self.settings.policy.outlier else {
            return;
        };
        let Some(state) = self.clusters.at_mut(index) else {
            return;
        };
        let now = host.now_nanos();
        let engine = &state.engine;
        let present = |a: &str| engine.contains(a);
        let mut store = SharedStore::new(host, &state.keys);
        let result = detector::sweep_if_due(&mut store, outlier, now, &present);
        let table = store.table();
        match result {
            Ok(Some(back)) => {
                for address in &back {
                    host.log(
                        LogLevel::Info,
                        &crate::logline::returned(&state.name, address),
                    );
                }
                metrics.add(host, Metric::Unejections, back.len() as i64);
            }
            Ok(None) => {}
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: sweep of {}: {e}", state.name),
                );
                metrics.inc(host, Metric::HostErrors);
            }
        }
        if let Ok(table) = table {
            state.adopt(&table);
        }
    }

    /// Reads the 8-byte epoch; fetches the table only when it moved.
    pub(super) fn refresh_ejections(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        index: usize,
    ) {
        if self.settings.policy.outlier.is_none() {
            return;
        }
        let Some(state) = self.clusters.at_mut(index) else {
            return;
        };
        let epoch = match shared::read_epoch(host, state.keys.epoch()) {
            Ok(epoch) => epoch,
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: ejection epoch: {e}"),
                );
                metrics.inc(host, Metric::HostErrors);
                return;
            }
        };
        if epoch.is_none() || state.engine.table_generation() == epoch {
            return;
        }
        match SharedStore::new(host, &state.keys).table() {
            Ok(table) => state.adopt(&table),
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: ejection table: {e}"),
                );
                metrics.inc(host, Metric::HostErrors);
            }
        }
    }

    /// Re-reads the table whatever the epoch says (a new inventory).
    fn refresh_ejections_forced(&mut self, host: &mut dyn Host, index: usize) {
        let Some(state) = self.clusters.at_mut(index) else {
            return;
        };
        if let Ok(table) = SharedStore::new(host, &state.keys).table() {
            // Same inventory: only the health view changes (no clone, no re-rank).
            state.adopt(&table);
        }
    }

    /// Which cluster this request is for, loading or refreshing its
    /// inventory; `None` leaves the request to Envoy.
    pub(super) fn cluster_for_request(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        now: u64,
        seed: u64,
    ) -> Option<usize> {
        let namespace = match &self.settings.inventory {
            crate::config::InventorySource::ClusterMetadata { namespace } => namespace,
            crate::config::InventorySource::Envoy(_) => {
                return self.envoy_cluster_for_request(host, metrics)
            }
            crate::config::InventorySource::Config(_) => return self.clusters.find(CONFIG_CLUSTER),
        };
        let namespace = namespace.clone();
        let cluster = match host.property(properties::CLUSTER_NAME) {
            // The host's buffer becomes the String: no copy.
            Ok(Some(b)) => String::from_utf8(b).ok()?,
            Ok(None) => {
                metrics.inc(host, Metric::Passthrough);
                return None;
            }
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: xds.cluster_name: {e}"),
                );
                metrics.inc(host, Metric::HostErrors);
                return None;
            }
        };
        // A control plane that versions the inventory (`revision`) is
        // noticed on the next request; otherwise the metadata is compared
        // once per INVENTORY_CHECK.
        let revision = host
            .property(&properties::metadata_revision(&namespace))
            .ok()
            .flatten();
        let known = self.clusters.find(&cluster);
        let due = match known.and_then(|i| self.clusters.at(i)) {
            None => true,
            Some(s) => match &revision {
                Some(r) => s.revision.as_ref() != Some(r),
                None => now.saturating_sub(s.checked_at) >= crate::outlier::nanos(INVENTORY_CHECK),
            },
        };
        if due {
            if let Some(state) = known.and_then(|i| self.clusters.at_mut(i)) {
                state.revision.clone_from(&revision);
            }
            self.load_metadata(host, metrics, &cluster, &namespace, now, seed);
        }
        let found = self.clusters.find(&cluster);
        if found.is_none() {
            metrics.inc(host, Metric::Passthrough);
        }
        found
    }

    /// Reads the cluster metadata; decodes it only if its bytes changed.
    /// A bad new inventory keeps the last good one (logged once per change).
    fn load_metadata(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        cluster: &str,
        namespace: &str,
        now: u64,
        seed: u64,
    ) {
        // The metadata bytes (megabytes for a large inventory) are freed as
        // soon as they are decoded, before the engine is rebuilt.
        let Some((inventory, hash)) = self.decode_metadata(host, metrics, cluster, namespace, now)
        else {
            return;
        };
        if let Some(warning) = crate::lint::ejection_cap(&self.settings, inventory.len()) {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: cluster {cluster}: {warning}"),
            );
        }
        let index = self.install(
            host,
            metrics,
            cluster,
            inventory,
            seed ^ fnv1a(cluster.as_bytes()),
        );
        if let Some(state) = self.clusters.at_mut(index) {
            if state.metadata_hash.is_none() {
                state.checked_at = now;
            }
            state.metadata_hash = Some(hash);
        }
        metrics.inc(host, Metric::InventoryUpdates);
        // Force the ejection view to be re-read for the new inventory.
        self.refresh_ejections_forced(host, index);
    }

    /// Reads and decodes the cluster metadata; `None` when it is unchanged,
    /// unreadable, refused (logged) or not this plugin's.
    fn decode_metadata(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        cluster: &str,
        namespace: &str,
        now: u64,
    ) -> Option<(Inventory, u64)> {
        let bytes = match host.property(properties::CLUSTER_METADATA) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: xds.cluster_metadata: {e}"),
                );
                metrics.inc(host, Metric::HostErrors);
                return None;
            }
        };
        let hash = fnv1a(&bytes);
        let known = self.clusters.find(cluster);
        if let Some(state) = known.and_then(|i| self.clusters.at_mut(i)) {
            state.checked_at = now;
            if state.metadata_hash == Some(hash) {
                return None;
            }
            state.metadata_hash = Some(hash);
        }
        match crate::metadata::inventory_from_metadata(&bytes, namespace) {
            Ok(inventory) => Some((inventory, hash)),
            // Not a cluster this plugin manages.
            Err(InventoryError::MissingNamespace(_)) if known.is_none() => None,
            Err(e) => {
                host.log(LogLevel::Warn, &format!("locality-failover: cluster {cluster}: inventory refused, keeping the last good one: {e}"));
                metrics.inc(host, Metric::InventoryErrors);
                None
            }
        }
    }
}
