//! Per-cluster state: the engine, where its inventory came from, and the
//! cluster's view of the shared ejection table.

use crate::detector;
use crate::engine::Engine;
use crate::host::{Host, LogLevel};
use crate::inventory::{Inventory, InventoryError};
use crate::metrics::{Metric, Metrics};
use crate::outlier::nanos;
use crate::outlier::EjectionTable;
use crate::properties;
use crate::shared::{self, ClusterKeys, SharedStore};

use super::routed::{routed, Routed};
use super::{
    fnv1a, warn_host_error, Configured, CONFIG_CLUSTER, INVENTORY_CHECK, REVISION_REFRESH,
    VIEW_REFRESH,
};

pub(super) struct ClusterState {
    pub name: String,
    pub engine: Engine,
    /// Hash of the metadata bytes the inventory was decoded from.
    metadata_hash: Option<u64>,
    /// The inventory's `revision` leaf as last read, when the control plane sets one.
    revision: Option<Vec<u8>>,
    checked_at: u64,
    /// When the `revision` leaf was last read (at most once per
    /// [`REVISION_REFRESH`]), and what it said.
    revision_read_at: u64,
    revision_read: RevisionRead,
    /// When the cached ejection table says the next sweep is due.
    pub next_sweep: u64,
    pub keys: ClusterKeys,
    /// When this VM last read the epoch key (0: read it on the next request).
    view_read_at: u64,
    /// The "streaks dirtied" count as last read.
    dirtied: Option<u64>,
    /// Per endpoint: equal to `clean_mark` when the endpoint is known to have
    /// no failure streak (read as zero since the dirtied count last moved).
    clean: Vec<u32>,
    clean_mark: u32,
    /// The addresses of the inventory before the last change, by the engine
    /// version they belonged to: requests in flight across an inventory
    /// change still name the endpoints they were steered to.
    retired: Option<(u32, Vec<String>)>,
}

/// The `revision` leaf as last read, against the loaded inventory's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevisionRead {
    Absent,
    Same,
    /// Differs, or not read yet: read it again on the next request.
    Differs,
}

/// The metadata namespace of the inventory (empty for an inline one).
/// The cluster's slot, or `None` (a passthrough, counted).
pub(super) fn found_or_passthrough(
    clusters: &mut Clusters,
    host: &mut dyn Host,
    metrics: &Metrics,
    cluster: &str,
) -> Option<usize> {
    let found = clusters.find(cluster);
    if found.is_none() {
        metrics.inc(host, Metric::Passthrough);
    }
    found
}

/// The request's cluster (`xds.cluster_name`); `None` when it has none
/// (a passthrough), when the name is not UTF-8 or the read fails (a host
/// error).
pub(super) fn request_cluster_name(host: &mut dyn Host, metrics: &Metrics) -> Option<String> {
    match host.property(properties::CLUSTER_NAME) {
        // The host's buffer becomes the String: no copy.
        Ok(Some(b)) => String::from_utf8(b).ok(),
        Ok(None) => {
            metrics.inc(host, Metric::Passthrough);
            None
        }
        Err(e) => {
            warn_host_error(host, metrics, "xds.cluster_name", &e);
            None
        }
    }
}

fn namespace_of(settings: &crate::config::Settings) -> &str {
    match &settings.inventory {
        crate::config::InventorySource::ClusterMetadata { namespace } => namespace,
        _ => "",
    }
}

impl ClusterState {
    fn new(name: &str, engine: Engine, keys: ClusterKeys) -> Self {
        let mut state = ClusterState {
            name: name.to_string(),
            engine,
            metadata_hash: None,
            revision: None,
            checked_at: 0,
            revision_read_at: 0,
            revision_read: RevisionRead::Differs,
            next_sweep: 0,
            keys,
            view_read_at: 0,
            dirtied: None,
            clean: Vec::new(),
            clean_mark: 1,
            retired: None,
        };
        state.reset_clean();
        state
    }

    /// Takes a freshly read ejection table as this VM's view. The one place
    /// a table reaches the engine.
    pub fn adopt(&mut self, table: &EjectionTable) {
        self.next_sweep = table.next_sweep;
        self.engine.apply_table(table);
    }

    /// Replaces the inventory, keeping the old addresses for requests in flight.
    fn set_inventory(&mut self, inventory: Inventory) {
        let version = self.engine.version();
        self.retired = Some((version, self.engine.replace_inventory(inventory)));
        self.reset_clean();
    }

    fn reset_clean(&mut self) {
        self.clean = vec![0; self.engine.inventory().len()];
        self.clean_mark = 1;
    }

    /// The address of endpoint `index` of inventory `version` (the current
    /// one or the one before).
    pub fn address(&self, version: u32, index: usize) -> Option<&str> {
        if version == self.engine.version() {
            return self.engine.endpoint(index).map(|e| e.address.as_str());
        }
        let (retired, addresses) = self.retired.as_ref()?;
        (*retired == version)
            .then(|| addresses.get(index))
            .flatten()
            .map(String::as_str)
    }

    /// Least-request bookkeeping: the request steered to `index` of
    /// inventory `version` ended.
    pub fn end(&mut self, version: u32, index: usize) {
        if version == self.engine.version() {
            self.engine.end_index(index);
        } else if let Some((_, addresses)) = self.retired.as_ref().filter(|(v, _)| *v == version) {
            if let Some(address) = addresses.get(index) {
                self.engine.end(address);
            }
        }
    }

    /// Whether endpoint `index` (current inventory) is known to have no streak.
    pub fn is_clean(&self, index: usize) -> bool {
        self.clean.get(index) == Some(&self.clean_mark)
    }

    pub fn mark_clean(&mut self, index: usize) {
        if let Some(c) = self.clean.get_mut(index) {
            *c = self.clean_mark;
        }
    }

    /// Some streak may have left zero: nothing is known clean any more.
    pub fn forget_clean(&mut self) {
        self.clean_mark = self.clean_mark.wrapping_add(1);
        if self.clean_mark == 0 {
            self.clean.iter_mut().for_each(|c| *c = 0);
            self.clean_mark = 1;
        }
    }

    /// Takes the dirtied count as read; a moved count forgets the clean set.
    fn observe_dirtied(&mut self, dirtied: u64) {
        if self.dirtied != Some(dirtied) {
            self.dirtied = Some(dirtied);
            self.forget_clean();
        }
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
        self.warn_ejection_cap(host, name, inventory.len());
        let index = match self.clusters.find(name) {
            Some(index) => {
                if let Some(state) = self.clusters.at_mut(index) {
                    state.set_inventory(inventory);
                }
                index
            }
            None => self.clusters.push(ClusterState::new(
                name,
                Engine::new(
                    self.settings.policy.clone(),
                    self.own_labels.clone(),
                    inventory,
                    seed,
                ),
                ClusterKeys::new(&self.settings.shared_prefix, name),
            )),
        };
        self.prepare_shared(host, metrics, index);
        // A new inventory starts without the ejection view: re-read it now,
        // not on the next refresh (which may be a millisecond away, and a
        // request in between would pick an ejected host).
        self.refresh_ejections_forced(host, index);
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
            let what = format!("shared data for {}", state.name);
            warn_host_error(host, metrics, &what, &e);
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
            Err(e) => warn_host_error(host, metrics, &format!("sweep of {}", state.name), &e),
        }
        if let Ok(table) = table {
            state.adopt(&table);
        }
    }

    /// Brings this VM's view of the shared outlier state up to date: reads
    /// the epoch key (at most once per [`VIEW_REFRESH`] unless `force`),
    /// fetches the table only when its generation moved, and forgets the
    /// known-clean endpoints when a streak left zero somewhere.
    ///
    /// Bounded staleness: between two reads (≤ 1 ms apart while requests
    /// flow, and on every tick) an ejection or a first failure recorded by
    /// another worker is not seen yet. A request steered in that window can
    /// go to an endpoint another worker has just ejected (Envoy's own
    /// detector applies ejections on the main thread and posts host sets to
    /// the workers, which takes a comparable time), and a success in that
    /// window on an endpoint believed clean does not reset a streak another
    /// worker has just started.
    pub(super) fn refresh_view(
        &mut self,
        host: &mut dyn Host,
        metrics: &Metrics,
        index: usize,
        now: u64,
        force: bool,
    ) {
        if self.settings.policy.outlier.is_none() {
            return;
        }
        let Some(state) = self.clusters.at_mut(index) else {
            return;
        };
        if !force
            && state.view_read_at != 0
            && now.saturating_sub(state.view_read_at) < nanos(VIEW_REFRESH)
        {
            return;
        }
        state.view_read_at = now;
        let view = match shared::read_view(host, state.keys.epoch()) {
            Ok(view) => view,
            Err(e) => {
                warn_host_error(host, metrics, "ejection epoch", &e);
                return;
            }
        };
        let Some(view) = view else {
            return;
        };
        state.observe_dirtied(view.dirtied);
        if state.engine.table_generation() == Some(view.generation) {
            return;
        }
        match SharedStore::new(host, &state.keys).table() {
            Ok(table) => state.adopt(&table),
            Err(e) => warn_host_error(host, metrics, "ejection table", &e),
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
        match &self.settings.inventory {
            crate::config::InventorySource::ClusterMetadata { .. } => {}
            crate::config::InventorySource::Envoy(_) => {
                return self.envoy_cluster_for_request(host, metrics)
            }
            crate::config::InventorySource::Config(_) => return self.clusters.find(CONFIG_CLUSTER),
        };
        let read;
        let cluster: &str = match routed(self.declared.as_mut(), host, metrics)? {
            Routed::Declared => &self.declared.as_ref()?.name,
            Routed::Read(name) => {
                read = name;
                &read
            }
        };
        let known = self.clusters.find(cluster);
        let namespace = namespace_of(&self.settings);
        if !inventory_due(&mut self.clusters, host, namespace, known, now) {
            return found_or_passthrough(&mut self.clusters, host, metrics, cluster);
        }
        let (cluster, namespace) = (cluster.to_string(), namespace.to_string());
        self.load_metadata(host, metrics, &cluster, &namespace, now, seed);
        found_or_passthrough(&mut self.clusters, host, metrics, &cluster)
    }

    /// `maxEjectionPercent` that cannot eject one of `endpoints` hosts
    /// ([`crate::lint::ejection_cap`]): said when a cluster's endpoint count
    /// is new (not on every health change the `envoy` source republishes).
    /// An inline inventory was linted at configure time.
    fn warn_ejection_cap(&mut self, host: &mut dyn Host, name: &str, endpoints: usize) {
        if matches!(
            self.settings.inventory,
            crate::config::InventorySource::Config(_)
        ) {
            return;
        }
        let before = self
            .clusters
            .find(name)
            .and_then(|i| self.clusters.at(i))
            .map(|s| s.engine.inventory().endpoints().len());
        if before == Some(endpoints) {
            return;
        }
        if let Some(warning) = crate::lint::ejection_cap(&self.settings, endpoints) {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: cluster {name}: {warning}"),
            );
        }
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
                warn_host_error(host, metrics, "xds.cluster_metadata", &e);
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

/// Whether a known cluster's inventory must be looked at again. A
/// control plane that versions the inventory (`revision`) is noticed
/// within [`REVISION_REFRESH`] (the leaf is read at most that often);
/// otherwise the metadata is compared once per [`INVENTORY_CHECK`].
fn inventory_due(
    clusters: &mut Clusters,
    host: &dyn Host,
    namespace: &str,
    known: Option<usize>,
    now: u64,
) -> bool {
    let state = known.and_then(|i| clusters.at_mut(i));
    let stale = |s: &ClusterState| now.saturating_sub(s.checked_at) >= nanos(INVENTORY_CHECK);
    if let Some(s) = &state {
        let recent = s.revision_read_at != 0
            && now.saturating_sub(s.revision_read_at) < nanos(REVISION_REFRESH);
        match s.revision_read {
            RevisionRead::Same if recent => return false,
            RevisionRead::Absent if recent => return stale(s),
            _ => {}
        }
    }
    let revision = host
        .property(&properties::metadata_revision(namespace))
        .ok()
        .flatten();
    let Some(s) = state else {
        return true;
    };
    s.revision_read_at = now;
    let due = match &revision {
        Some(r) => s.revision.as_ref() != Some(r),
        None => stale(s),
    };
    if due {
        s.revision.clone_from(&revision);
    }
    s.revision_read = match &revision {
        None => RevisionRead::Absent,
        Some(r) if s.revision.as_ref() == Some(r) => RevisionRead::Same,
        Some(_) => RevisionRead::Differs,
    };
    due
}
