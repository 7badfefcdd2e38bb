//! The filter's root and request logic, written against [`Host`] so the
//! wasm build and the native harness run the same code.
//!
//! Per VM (one per Envoy worker) a [`FilterRoot`] holds the validated
//! settings, the proxy's own labels and one [`Engine`] per upstream
//! cluster. Per request it removes any steering header the client sent,
//! picks the endpoint, writes the steering header, and at the end turns
//! Envoy's answer into outcomes for the shared outlier detector.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::{
    InventorySource, OutlierConfig, PriorityLabel, RankingRule, Settings, SteeringMode,
    DEFAULT_ORIGINAL_DST_HEADER, DEFAULT_OVERRIDE_HEADER, DEFAULT_ROUTE_HEADER, LABEL_CLUSTER,
    LABEL_HOSTNAME, LABEL_NETWORK, LABEL_REGION, LABEL_SUBZONE, LABEL_ZONE,
};
use crate::detector::{self, ClusterView};
use crate::engine::Engine;
use crate::feedback::{attribute, FinalAnswer, RetryShape};
use crate::host::{decode, Host, LogLevel};
use crate::inventory::{Inventory, Labels};
use crate::metrics::{Metric, Metrics};
use crate::shared::SharedStore;

/// How often a VM re-reads the cluster metadata to notice a new inventory.
pub const INVENTORY_CHECK: Duration = Duration::from_secs(1);
/// Cluster key used when the inventory comes from the plugin configuration.
pub const CONFIG_CLUSTER: &str = "config";

/// What a request carries from its headers to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestState {
    pub cluster: String,
    /// Endpoint addresses written, in order (pick first).
    pub list: Vec<String>,
    pub priority: u32,
}

struct ClusterState {
    engine: Engine,
    /// Hash of the metadata bytes the inventory was decoded from.
    metadata_hash: Option<u64>,
    /// The inventory's `revision` leaf as last read, when the control plane sets one.
    revision: Option<Vec<u8>>,
    checked_at: u64,
    /// When the cached ejection table says the next sweep is due.
    next_sweep: u64,
    /// `<prefix>/<cluster>/epoch`, read on every request.
    epoch_key: String,
}

pub struct FilterRoot {
    settings: Option<Settings>,
    own_labels: Labels,
    clusters: HashMap<String, ClusterState>,
    metrics: Metrics,
    seed: u64,
    /// When the plugin was configured: interval sweeps count from here.
    configured_at: u64,
    /// Buffers reused by every request (the request path allocates only
    /// what the host hands over and what the request must remember).
    scratch_hosts: Vec<usize>,
    scratch_value: String,
    scratch_key: String,
}

impl FilterRoot {
    pub fn new(seed: u64) -> Self {
        FilterRoot {
            settings: None,
            own_labels: Labels::new(),
            clusters: HashMap::new(),
            metrics: Metrics::default(),
            seed,
            configured_at: 0,
            scratch_hosts: Vec::new(),
            scratch_value: String::new(),
            scratch_key: String::new(),
        }
    }

    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    pub fn own_labels(&self) -> &Labels {
        &self.own_labels
    }

    /// `on_configure`: validate, learn the proxy's locality, load an inline
    /// inventory. A bad configuration is refused with one log line naming
    /// the field; Envoy then keeps the previous one (or fails the plugin as
    /// its `failStrategy` says).
    pub fn on_configure(&mut self, host: &mut dyn Host) -> bool {
        self.metrics.define(host);
        let bytes = match host.plugin_configuration() {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("locality-failover: cannot read plugin configuration: {e}"),
                );
                self.metrics.inc(host, Metric::ConfigErrors);
                return false;
            }
        };
        let settings = match Settings::from_bytes(&bytes) {
            Ok(s) => s,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("locality-failover: configuration refused: {e}"),
                );
                self.metrics.inc(host, Metric::ConfigErrors);
                return false;
            }
        };
        for warning in crate::lint::warnings_for(&settings) {
            host.log(LogLevel::Warn, &format!("locality-failover: {warning}"));
        }
        self.own_labels = own_labels(host, &settings);
        self.configured_at = host.now_nanos();
        if !self.own_labels.contains_key(LABEL_REGION) {
            host.log(
                LogLevel::Warn,
                "locality-failover: the proxy's locality is unknown (no node locality, no `locality` in config): ranking treats its region/zone as empty",
            );
        }
        let tick = settings
            .policy
            .outlier
            .as_ref()
            .map(tick_period)
            .unwrap_or(INVENTORY_CHECK);
        if let Err(e) = host.set_tick_period(tick) {
            host.log(LogLevel::Warn, &format!("locality-failover: no tick: {e}"));
        }
        self.clusters.clear();
        if let InventorySource::Config(specs) = &settings.inventory {
            // Validated by Settings already; an error here is impossible but handled.
            match Inventory::from_specs(specs) {
                Ok(inv) => {
                    let engine = Engine::new(
                        settings.policy.clone(),
                        self.own_labels.clone(),
                        inv,
                        self.seed,
                    );
                    self.clusters.insert(
                        CONFIG_CLUSTER.to_string(),
                        ClusterState {
                            engine,
                            metadata_hash: None,
                            revision: None,
                            checked_at: 0,
                            next_sweep: 0,
                            epoch_key: crate::shared::epoch_key(
                                &settings.shared_prefix,
                                CONFIG_CLUSTER,
                            ),
                        },
                    );
                }
                Err(e) => {
                    host.log(
                        LogLevel::Error,
                        &format!("locality-failover: inventory.endpoints: {e}"),
                    );
                    self.metrics.inc(host, Metric::ConfigErrors);
                    return false;
                }
            }
        }
        self.settings = Some(settings);
        self.prepare_shared(host, CONFIG_CLUSTER);
        true
    }

    /// Creates the shared keys for an inventory and arms the sweep timer.
    fn prepare_shared(&mut self, host: &mut dyn Host, cluster: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        let Some(outlier) = &settings.policy.outlier else {
            return;
        };
        let Some(state) = self.clusters.get(cluster) else {
            return;
        };
        let now = host.now_nanos();
        let origin = self.configured_at;
        let mut store = SharedStore::new(host, &settings.shared_prefix, cluster);
        let result = store
            .ensure_streaks(
                state
                    .engine
                    .inventory()
                    .endpoints()
                    .iter()
                    .map(|e| e.address.as_str()),
            )
            .and_then(|()| detector::arm(&mut store, outlier, now, origin));
        if let Err(e) = result {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: shared data for {cluster}: {e}"),
            );
            self.metrics.inc(host, Metric::HostErrors);
        }
    }

    /// `on_tick`: interval sweeps (the first VM to see one due runs it for
    /// all) and inventory refresh.
    pub fn on_tick(&mut self, host: &mut dyn Host) {
        let names: Vec<String> = self.clusters.keys().cloned().collect();
        for cluster in names {
            self.sweep(host, &cluster);
        }
    }

    fn sweep(&mut self, host: &mut dyn Host, cluster: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        let Some(outlier) = settings.policy.outlier.clone() else {
            return;
        };
        let prefix = settings.shared_prefix.clone();
        let Some(state) = self.clusters.get_mut(cluster) else {
            return;
        };
        let now = host.now_nanos();
        let engine = &state.engine;
        let present = |a: &str| engine.contains(a);
        let mut store = SharedStore::new(host, &prefix, cluster);
        let result = detector::sweep_if_due(&mut store, &outlier, now, &present);
        let table = store.table();
        match result {
            Ok(Some(back)) => {
                for address in &back {
                    host.log(
                        LogLevel::Info,
                        &format!("locality-failover: {cluster}: {address} returns from ejection"),
                    );
                }
                self.metrics
                    .add(host, Metric::Unejections, back.len() as i64);
            }
            Ok(None) => {}
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: sweep of {cluster}: {e}"),
                );
                self.metrics.inc(host, Metric::HostErrors);
            }
        }
        if let Ok(table) = table {
            state.next_sweep = table.next_sweep;
            state.engine.apply_table(&table);
        }
    }

    /// `on_http_request_headers`. Returns what the request must remember,
    /// or `None` when the filter leaves it alone (or answered it).
    pub fn on_request_headers(&mut self, host: &mut dyn Host) -> Option<RequestState> {
        // Never let a client choose the upstream: drop any steering value it
        // sent before anything else. Unconfigured (configuration refused),
        // the default header names are dropped and the request is left to
        // Envoy's own load balancer.
        let Some(settings) = &self.settings else {
            for h in [
                DEFAULT_OVERRIDE_HEADER,
                DEFAULT_ORIGINAL_DST_HEADER,
                DEFAULT_ROUTE_HEADER,
            ] {
                if !strip_client_header(&self.metrics, host, h) {
                    return None;
                }
            }
            return None;
        };
        if !strip_client_header(&self.metrics, host, &settings.steering.header) {
            return None;
        }
        // One clock read serves the whole callback.
        let now = host.now_nanos();
        let cluster = self.cluster_for_request(host, now)?;
        if self
            .clusters
            .get(&cluster)
            .is_some_and(|s| s.next_sweep != 0 && now >= s.next_sweep)
        {
            self.sweep(host, &cluster);
        }
        self.refresh_ejections(host, &cluster);
        let settings = self.settings.as_ref()?;
        let steering = &settings.steering;
        let state = self.clusters.get_mut(&cluster)?;
        let Some(pick) = state
            .engine
            .decide_into(steering.max_hosts, &mut self.scratch_hosts)
        else {
            self.metrics.inc(host, Metric::NoHealthy);
            let _ = host.send_local_reply(503, "no healthy upstream");
            return None;
        };
        let engine = &state.engine;
        // The header value is written into a reused buffer: no per-entry
        // format!, no intermediate list, no join.
        let value = &mut self.scratch_value;
        value.clear();
        let mut list = Vec::new();
        match steering.mode {
            SteeringMode::OverrideHost | SteeringMode::OriginalDst => {
                list.reserve_exact(self.scratch_hosts.len());
                list.extend(
                    self.scratch_hosts
                        .iter()
                        .filter_map(|i| engine.endpoint(*i).map(|e| e.address.clone())),
                );
                if list.is_empty() {
                    return None;
                }
                let written = if steering.mode == SteeringMode::OverrideHost {
                    list.len()
                } else {
                    1
                };
                for (k, a) in list.iter().take(written).enumerate() {
                    if k > 0 {
                        value.push(',');
                    }
                    value.push_str(&steering.address_prefix);
                    value.push_str(a);
                }
            }
            SteeringMode::RouteHeader => match engine
                .endpoint(pick.endpoint)
                .and_then(|e| e.backend.as_deref())
            {
                Some(b) => value.push_str(b),
                None => {
                    self.metrics.inc(host, Metric::InventoryErrors);
                    host.log(LogLevel::Warn, "locality-failover: route-header mode needs a `backend` on every endpoint; request left to the route");
                    return None;
                }
            },
        }
        state.engine.begin(pick.endpoint);
        if let Err(e) = host.set_request_header(&steering.header, Some(value)) {
            host.log(
                LogLevel::Error,
                &format!("locality-failover: cannot set {}: {e}", steering.header),
            );
            self.metrics.inc(host, Metric::HostErrors);
            return None;
        }
        self.metrics.request(host, pick.priority);
        Some(RequestState {
            cluster,
            list,
            priority: pick.priority,
        })
    }

    /// Which cluster this request is for, loading or refreshing its inventory.
    fn cluster_for_request(&mut self, host: &mut dyn Host, now: u64) -> Option<String> {
        let settings = self.settings.as_ref()?;
        let InventorySource::ClusterMetadata { namespace } = &settings.inventory else {
            return Some(CONFIG_CLUSTER.to_string());
        };
        let cluster = match host.property(&["xds", "cluster_name"]) {
            // The host's buffer becomes the String: no copy.
            Ok(Some(b)) => String::from_utf8(b).ok()?,
            Ok(None) => {
                self.metrics.inc(host, Metric::Passthrough);
                return None;
            }
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: xds.cluster_name: {e}"),
                );
                self.metrics.inc(host, Metric::HostErrors);
                return None;
            }
        };
        // A control plane that versions the inventory (`revision`) is
        // noticed on the next request; otherwise the metadata is compared
        // once per INVENTORY_CHECK.
        let revision = host
            .property(&[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                namespace,
                "revision",
            ])
            .ok()
            .flatten();
        let due = match self.clusters.get(&cluster) {
            None => true,
            Some(s) => match &revision {
                Some(r) => s.revision.as_ref() != Some(r),
                None => now.saturating_sub(s.checked_at) >= crate::outlier::nanos(INVENTORY_CHECK),
            },
        };
        if due {
            let namespace = namespace.clone();
            if let Some(state) = self.clusters.get_mut(&cluster) {
                state.revision.clone_from(&revision);
            }
            self.load_metadata(host, &cluster, &namespace, now);
        }
        if self.clusters.contains_key(&cluster) {
            Some(cluster)
        } else {
            self.metrics.inc(host, Metric::Passthrough);
            None
        }
    }

    /// Reads the cluster metadata; decodes it only if its bytes changed.
    /// A bad new inventory keeps the last good one (logged once per change).
    fn load_metadata(&mut self, host: &mut dyn Host, cluster: &str, namespace: &str, now: u64) {
        // The metadata bytes (megabytes for a large inventory) are freed as
        // soon as they are decoded, before the engine is rebuilt.
        let Some((inventory, hash)) = self.decode_metadata(host, cluster, namespace, now) else {
            return;
        };
        let Some(settings) = &self.settings else {
            return;
        };
        if let Some(warning) = crate::lint::ejection_cap(settings, inventory.len()) {
            host.log(
                LogLevel::Warn,
                &format!("locality-failover: cluster {cluster}: {warning}"),
            );
        }
        match self.clusters.get_mut(cluster) {
            Some(state) => {
                state.engine.set_inventory(inventory, None);
                self.metrics.inc(host, Metric::InventoryUpdates);
            }
            None => {
                let engine = Engine::new(
                    settings.policy.clone(),
                    self.own_labels.clone(),
                    inventory,
                    self.seed ^ fnv1a(cluster.as_bytes()),
                );
                self.clusters.insert(
                    cluster.to_string(),
                    ClusterState {
                        engine,
                        metadata_hash: Some(hash),
                        revision: None,
                        checked_at: now,
                        next_sweep: 0,
                        epoch_key: crate::shared::epoch_key(&settings.shared_prefix, cluster),
                    },
                );
                self.metrics.inc(host, Metric::InventoryUpdates);
            }
        }
        self.prepare_shared(host, cluster);
        // Force the ejection view to be re-read for the new inventory.
        self.refresh_ejections_forced(host, cluster);
    }

    /// Reads and decodes the cluster metadata; `None` when it is unchanged,
    /// unreadable, refused (logged) or not this plugin's.
    fn decode_metadata(
        &mut self,
        host: &mut dyn Host,
        cluster: &str,
        namespace: &str,
        now: u64,
    ) -> Option<(Inventory, u64)> {
        let bytes = match host.property(&["xds", "cluster_metadata"]) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: xds.cluster_metadata: {e}"),
                );
                self.metrics.inc(host, Metric::HostErrors);
                return None;
            }
        };
        let hash = fnv1a(&bytes);
        if let Some(state) = self.clusters.get_mut(cluster) {
            state.checked_at = now;
            if state.metadata_hash == Some(hash) {
                return None;
            }
            state.metadata_hash = Some(hash);
        }
        let inventory = match crate::metadata::inventory_from_metadata(&bytes, namespace) {
            Ok(inv) => inv,
            Err(crate::inventory::InventoryError::MissingNamespace(_))
                if !self.clusters.contains_key(cluster) =>
            {
                // Not a cluster this plugin manages.
                return None;
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("locality-failover: cluster {cluster}: inventory refused, keeping the last good one: {e}"));
                self.metrics.inc(host, Metric::InventoryErrors);
                return None;
            }
        };
        Some((inventory, hash))
    }

    /// Reads the 8-byte epoch; fetches the table only when it moved.
    fn refresh_ejections(&mut self, host: &mut dyn Host, cluster: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        if settings.policy.outlier.is_none() {
            return;
        }
        let Some(state) = self.clusters.get_mut(cluster) else {
            return;
        };
        match crate::shared::read_epoch(host, &state.epoch_key) {
            Ok(Some(epoch)) if state.engine.table_generation() != Some(epoch) => {
                match SharedStore::new(host, &settings.shared_prefix, cluster).table() {
                    Ok(table) => {
                        state.next_sweep = table.next_sweep;
                        state.engine.apply_table(&table);
                    }
                    Err(e) => {
                        host.log(
                            LogLevel::Warn,
                            &format!("locality-failover: ejection table: {e}"),
                        );
                        self.metrics.inc(host, Metric::HostErrors);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                host.log(
                    LogLevel::Warn,
                    &format!("locality-failover: ejection epoch: {e}"),
                );
                self.metrics.inc(host, Metric::HostErrors);
            }
        }
    }

    fn refresh_ejections_forced(&mut self, host: &mut dyn Host, cluster: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        let prefix = settings.shared_prefix.clone();
        let Some(state) = self.clusters.get_mut(cluster) else {
            return;
        };
        if let Ok(table) = SharedStore::new(host, &prefix, cluster).table() {
            state.next_sweep = table.next_sweep;
            // Same inventory: only the health view changes (no clone, no re-rank).
            state.engine.apply_table(&table);
        }
    }

    /// `on_log`: attributes Envoy's final answer to the endpoints tried and
    /// feeds the shared outlier detector.
    pub fn on_log(&mut self, host: &mut dyn Host, request: &RequestState) {
        if self.on_log_unchanged_success(host, request) {
            return;
        }
        let Some(settings) = &self.settings else {
            return;
        };
        let prefix = settings.shared_prefix.clone();
        let address_prefix = settings.steering.address_prefix.clone();
        let shape = match settings.steering.mode {
            SteeringMode::OverrideHost => RetryShape::NextEntry,
            SteeringMode::OriginalDst => RetryShape::SameAddress,
            SteeringMode::RouteHeader => RetryShape::Unknown,
        };
        let outlier: Option<OutlierConfig> = settings.policy.outlier.clone();
        let answer = read_answer(host, &address_prefix, request.list.first(), shape);
        if let Some(state) = self.clusters.get_mut(&request.cluster) {
            if let Some(first) = request.list.first() {
                state.engine.end(first);
            }
        }
        let outcomes = attribute(&request.list, &answer, shape);
        if outcomes.len() > 1
            || request
                .list
                .first()
                .zip(answer.upstream.as_ref())
                .is_some_and(|(a, b)| a != b)
        {
            self.metrics.inc(host, Metric::Retried);
        }
        let Some(outlier) = outlier else { return };
        let Some(state) = self.clusters.get(&request.cluster) else {
            return;
        };
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
        let mut ejected: Vec<(String, Vec<crate::outlier::Detection>)> = Vec::new();
        let mut errors = 0;
        {
            let mut store = SharedStore::new(host, &prefix, &request.cluster);
            for (address, outcome) in &outcomes {
                if !engine.contains(address) {
                    continue;
                }
                match detector::record(&mut store, &outlier, address, *outcome, now, &view) {
                    Ok(r) if r.ejected() => ejected.push((
                        address.clone(),
                        r.detections
                            .iter()
                            .filter(|(_, x)| *x == crate::outlier::EjectResult::Ejected)
                            .map(|(d, _)| *d)
                            .collect(),
                    )),
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
            }
        }
        if !ejected.is_empty() {
            for (address, why) in &ejected {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "locality-failover: {}: ejected {address} ({why:?})",
                        request.cluster
                    ),
                );
            }
            self.metrics
                .add(host, Metric::Ejections, ejected.len() as i64);
            let cluster = request.cluster.clone();
            self.refresh_ejections(host, &cluster);
        }
        if errors > 0 {
            host.log(
                LogLevel::Warn,
                "locality-failover: shared outlier state could not be updated",
            );
            self.metrics.add(host, Metric::HostErrors, errors);
        }
    }

    /// The common case, settled with two property reads and one shared read
    /// and no allocation besides the host's buffers: a single attempt, to
    /// the first entry of the list, answered below 500, for an endpoint whose
    /// streaks that success does not change. Returns `false` (having changed
    /// nothing) when the full path is needed.
    fn on_log_unchanged_success(&mut self, host: &mut dyn Host, request: &RequestState) -> bool {
        let Some(settings) = &self.settings else {
            return false;
        };
        if settings.steering.mode == SteeringMode::RouteHeader {
            return false;
        }
        let Some(first) = request.list.first() else {
            return false;
        };
        let attempts = host
            .property(&["upstream", "request_attempt_count"])
            .ok()
            .flatten()
            .and_then(|b| decode::u64_le(&b));
        if attempts != Some(1) {
            return false;
        }
        let code = host
            .property(&["response", "code"])
            .ok()
            .flatten()
            .and_then(|b| decode::i64_le(&b))
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0);
        if !(100..500).contains(&code) {
            return false;
        }
        let Some(state) = self.clusters.get_mut(&request.cluster) else {
            return true;
        };
        if let Some(outlier) = &settings.policy.outlier {
            if state.engine.contains(first) {
                crate::shared::streak_key_into(
                    &mut self.scratch_key,
                    &settings.shared_prefix,
                    &request.cluster,
                    first,
                );
                let Ok(current) = crate::shared::read_streaks(host, &self.scratch_key) else {
                    return false;
                };
                let mut next = current;
                let detections = next.record(crate::outlier::Outcome::Http(code), outlier);
                if next != current || detections != [None, None] {
                    return false;
                }
            }
        }
        state.engine.end(first);
        true
    }

    /// The engine of one cluster, for tests and the harness.
    pub fn engine(&self, cluster: &str) -> Option<&Engine> {
        self.clusters.get(cluster).map(|s| &s.engine)
    }
}

/// Reads Envoy's final answer. The common case, one attempt answered below
/// 500, needs two property reads: the attempt went to the first entry the
/// filter wrote, and no response flag can change its outcome.
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

fn read_answer(
    host: &dyn Host,
    address_prefix: &str,
    first: Option<&String>,
    shape: RetryShape,
) -> FinalAnswer {
    let prop = |path: &[&str]| host.property(path).ok().flatten();
    let code = prop(&["response", "code"])
        .and_then(|b| decode::i64_le(&b))
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(0);
    let attempts = prop(&["upstream", "request_attempt_count"]).and_then(|b| decode::u64_le(&b));
    if let (Some(1), Some(first), true) = (attempts, first, shape != RetryShape::Unknown) {
        if (100..500).contains(&code) {
            return FinalAnswer {
                code,
                flags: 0,
                upstream: Some(first.clone()),
                attempts: 1,
            };
        }
    }
    let flags = prop(&["response", "flags"])
        .and_then(|b| decode::u64_le(&b))
        .unwrap_or(0);
    let upstream = prop(&["upstream", "address"])
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

/// The proxy's own labels: node locality, node labels (`xds.node.metadata.
/// LABELS.<name>`, read leaf by leaf: the whole node is ~60 KB), Istio's
/// `NETWORK` node metadata, then the configuration's overrides.
fn own_labels(host: &dyn Host, settings: &Settings) -> Labels {
    let mut labels = Labels::new();
    let read = |path: &[&str]| {
        host.property(path)
            .ok()
            .flatten()
            .and_then(|b| decode::string(&b))
            .filter(|s| !s.is_empty())
    };
    let mut wanted: Vec<String> = [
        LABEL_NETWORK,
        LABEL_REGION,
        LABEL_ZONE,
        LABEL_SUBZONE,
        LABEL_CLUSTER,
        LABEL_HOSTNAME,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let RankingRule::FailoverPriority { labels: list, .. } = &settings.policy.ranking {
        for PriorityLabel { name, .. } in list {
            if !wanted.contains(name) {
                wanted.push(name.clone());
            }
        }
    }
    for name in &wanted {
        if let Some(v) = read(&["xds", "node", "metadata", "LABELS", name]) {
            labels.insert(name.clone(), v);
        }
    }
    for (label, leaf) in [
        (LABEL_REGION, "region"),
        (LABEL_ZONE, "zone"),
        (LABEL_SUBZONE, "sub_zone"),
    ] {
        if !labels.contains_key(label) {
            if let Some(v) = read(&["xds", "node", "locality", leaf]) {
                labels.insert(label.to_string(), v);
            }
        }
    }
    if !labels.contains_key(LABEL_NETWORK) {
        if let Some(v) = read(&["xds", "node", "metadata", "NETWORK"]) {
            labels.insert(LABEL_NETWORK.to_string(), v);
        }
    }
    for (k, v) in &settings.locality_override {
        labels.insert(k.clone(), v.clone());
    }
    labels
}

/// Ticks often enough that a sweep runs close to when it is due.
fn tick_period(cfg: &OutlierConfig) -> Duration {
    (cfg.interval / 10).clamp(Duration::from_millis(10), INVENTORY_CHECK)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
