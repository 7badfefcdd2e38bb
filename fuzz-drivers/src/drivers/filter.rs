//! `filter`: the whole `FilterRoot` in the simulated Envoy
//! (`host_harness::sim::SimEnvoy`, 1 to 3 worker VMs sharing data), plus
//! one more VM driven by hand through `SimHost` so that `on_log` also sees
//! arbitrary response properties. Inputs: plugin-configuration bytes
//! (arbitrary, or a generated configuration), cluster-metadata bytes
//! (arbitrary, or a generated inventory), client headers (steering headers
//! included), upstream behaviours and retries, response properties, clock
//! moves, reconfigurations, corrupted shared data and host-call faults.
//!
//! Must never panic, and a steering header that reaches the router is one
//! the filter wrote: made only of addresses (or backends) of the inventory
//! the filter serves.

use std::collections::BTreeMap;
use std::time::Duration;

use locality_failover::config::{
    InventorySource, Settings, SteeringMode, DEFAULT_ORIGINAL_DST_HEADER, DEFAULT_OVERRIDE_HEADER,
    DEFAULT_ROUTE_HEADER,
};
use locality_failover::feedback::flags;
use locality_failover::filter::{FilterRoot, RequestState, CONFIG_CLUSTER};
use locality_failover::inventory::Inventory;
use locality_failover::metadata::{inventory_from_metadata, metadata_for};
use prost::Message;

use crate::gen;
use crate::input::Input;
use crate::sim::{
    lock, node_properties, prop_key, Behavior, Faults, RetryPolicy, RouterSteering, SimEnvoy,
};

pub const MAX_STEPS: usize = 128;
/// Worker ticks one input may cost (a clock move is cut short beyond).
const TICK_BUDGET: u64 = 4_000;
const DECOY: &str = "10.99.99.99:80";
/// Largest raw configuration / metadata blob taken from the input.
pub const RAW_MAX: usize = 4096;

const CLUSTERS: &[&str] = &[
    "outbound|8080||svc.ns.svc.cluster.local",
    "outbound|80||other",
    "",
];

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let workers = inp.below(3) + 1;
    let node_labels = gen::labels(&mut inp);
    let seed = inp.u64();
    let config = config_bytes(&mut inp);
    let namespace = namespace_of(&config);
    let metadata = metadata_bytes(&mut inp, &namespace);
    let cluster = inp.pick(CLUSTERS).to_string();

    let sim = SimEnvoy::new(
        workers,
        &node_labels,
        config.clone(),
        seed,
        RouterSteering::OverrideHost {
            header: DEFAULT_OVERRIDE_HEADER.into(),
            prefix: String::new(),
        },
    );
    let props = node_properties(&node_labels);
    let mut h = Harness {
        sim,
        config,
        props,
        manual: FilterRoot::new(seed ^ 0x5eed),
        pending: Vec::new(),
        metadata: Vec::new(),
        cluster: None,
        ticks: 0,
        known: Vec::new(),
    };
    h.set_cluster(Some(cluster), metadata);
    h.configure();
    for _ in 0..MAX_STEPS {
        if inp.is_empty() {
            break;
        }
        h.step(&mut inp);
    }
}

/// Plugin configuration bytes: arbitrary, or a generated configuration
/// (valid more often than not) written as JSON.
pub fn config_bytes(inp: &mut Input) -> Vec<u8> {
    match inp.below(8) {
        0 => inp.bytes(RAW_MAX).to_vec(),
        1 => Vec::new(),
        _ => {
            let raw = gen::plugin_config(inp);
            let json = gen::plugin_config_json(&raw);
            serde_json::to_vec(&json).unwrap_or_default()
        }
    }
}

fn namespace_of(config: &[u8]) -> String {
    match Settings::from_bytes(config).map(|s| s.inventory) {
        Ok(InventorySource::ClusterMetadata { namespace }) => namespace,
        _ => locality_failover::config::DEFAULT_METADATA_NAMESPACE.to_string(),
    }
}

/// Cluster metadata bytes: arbitrary, a generated inventory (usually valid)
/// under the configured namespace, or an arbitrary `Struct` there.
pub fn metadata_bytes(inp: &mut Input, namespace: &str) -> Vec<u8> {
    match inp.below(8) {
        0 => inp.bytes(RAW_MAX).to_vec(),
        1 => {
            let mut fm = std::collections::HashMap::new();
            fm.insert(namespace.to_string(), gen::pb_inventory(inp));
            locality_failover::metadata::Metadata {
                filter_metadata: fm,
            }
            .encode_to_vec()
        }
        2 => {
            let mut fm = std::collections::HashMap::new();
            fm.insert(namespace.to_string(), gen::pb_struct(inp, 3));
            locality_failover::metadata::Metadata {
                filter_metadata: fm,
            }
            .encode_to_vec()
        }
        _ => {
            let specs = gen::endpoints(inp);
            let mut json = serde_json::json!({ "endpoints": specs });
            if inp.bool() {
                json["revision"] = serde_json::Value::String(inp.u8().to_string());
            }
            metadata_for(namespace, &json)
        }
    }
}

struct Harness {
    sim: SimEnvoy,
    config: Vec<u8>,
    /// Properties the hand-driven VM sees (the simulated Envoy's own are private).
    props: BTreeMap<String, Vec<u8>>,
    manual: FilterRoot,
    pending: Vec<RequestState>,
    metadata: Vec<u8>,
    cluster: Option<String>,
    ticks: u64,
    /// Endpoints of the inline and metadata inventories, (address,
    /// backend), recomputed when the configuration or metadata change.
    known: Vec<(String, Option<String>)>,
}

impl Harness {
    fn set_prop(&mut self, path: &[&str], value: Option<Vec<u8>>) {
        match &value {
            Some(v) => self.props.insert(prop_key(path), v.clone()),
            None => self.props.remove(&prop_key(path)),
        };
        self.sim.set_property(path, value);
    }

    /// Publishes the cluster; Envoy's host set is the inventory's
    /// addresses plus one the filter never knows.
    fn set_cluster(&mut self, name: Option<String>, metadata: Vec<u8>) {
        self.metadata = metadata.clone();
        self.refresh_known();
        let hosts = self.addresses();
        for a in &hosts {
            self.sim
                .upstreams
                .entry(a.clone())
                .or_insert(Behavior::Healthy);
        }
        self.sim
            .set_cluster(name.as_deref().unwrap_or(""), metadata.clone(), hosts);
        self.props
            .insert(prop_key(&["xds", "cluster_metadata"]), metadata.clone());
        match &name {
            Some(n) => {
                self.props
                    .insert(prop_key(&["xds", "cluster_name"]), n.as_bytes().to_vec());
            }
            None => {
                self.set_prop(&["xds", "cluster_name"], None);
            }
        }
        self.cluster = name;
    }

    /// Endpoints of the inline and metadata inventories, as the
    /// configuration bytes and metadata bytes say (not as the filter read them).
    fn refresh_known(&mut self) {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        if let Ok(s) = Settings::from_bytes(&self.config) {
            let inv = match &s.inventory {
                InventorySource::Config(specs) => Inventory::from_specs(specs).ok(),
                InventorySource::ClusterMetadata { namespace } => {
                    inventory_from_metadata(&self.metadata, namespace).ok()
                }
                // The fuzzed sim host has no admin: never an inventory.
                InventorySource::Envoy(_) => None,
            };
            for e in inv.iter().flat_map(Inventory::endpoints) {
                if !out.iter().any(|(a, _)| a == &e.address) {
                    out.push((e.address.clone(), e.backend.clone()));
                }
            }
        }
        self.known = out;
    }

    /// `on_configure` everywhere, then the router follows what the filter
    /// now writes (header, prefix, backends).
    fn configure(&mut self) {
        self.sim.set_config(self.config.clone());
        self.sim.configure();
        let mut host = self.sim.host_with(&self.props, &self.config);
        self.manual.on_configure(&mut host);
        self.refresh_known();
        self.sync_router();
    }

    fn sync_router(&mut self) {
        let Some(s) = self.sim.root(0).and_then(FilterRoot::settings) else {
            return;
        };
        let header = s.steering.header.clone();
        let prefix = s.steering.address_prefix.clone();
        self.sim.steering = match s.steering.mode {
            SteeringMode::OverrideHost => RouterSteering::OverrideHost { header, prefix },
            SteeringMode::OriginalDst => RouterSteering::OriginalDst { header, prefix },
            SteeringMode::StatefulSession => RouterSteering::StatefulSession { header, prefix },
            SteeringMode::RouteHeader => {
                let mut backends: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (address, backend) in &self.known {
                    if let Some(b) = backend {
                        backends.entry(b.clone()).or_default().push(address.clone());
                    }
                }
                RouterSteering::RouteHeader { header, backends }
            }
        };
    }

    fn step(&mut self, inp: &mut Input) {
        match inp.below(18) {
            0..=5 => self.request(inp),
            6 => self.advance(inp),
            7 => self.set_upstream(inp),
            8 => self.set_retry(inp),
            9 => self.republish_cluster(inp),
            10 => self.reconfigure(inp),
            11 | 12 => self.manual_request(inp),
            13 => self.manual_log(inp),
            14 => self.manual_tick(),
            15 => self.corrupt_shared(inp),
            16 => {
                self.sim.faults = Faults {
                    fail_properties: inp.ratio(1, 4),
                    fail_shared_data: inp.ratio(1, 4),
                    fail_headers: inp.ratio(1, 8),
                };
            }
            _ => {
                self.sim.pinned_worker = if inp.bool() { None } else { Some(inp.below(4)) };
            }
        }
    }

    /// The router's retry policy: none, or some attempts on some causes.
    fn set_retry(&mut self, inp: &mut Input) {
        // Routes with and without include_attempt_count_in_response.
        self.sim.attempt_count_in_response = inp.bool();
        self.sim.retry = if inp.ratio(1, 3) {
            None
        } else {
            Some(RetryPolicy {
                attempts: inp.below(4) as u32,
                retry_on: ["5xx", "gateway-error", "connect-failure", "reset"]
                    .iter()
                    .filter(|_| inp.bool())
                    .map(|s| s.to_string())
                    .collect(),
            })
        };
    }

    /// A CDS update: the cluster's metadata (old or new bytes) under its
    /// name or another, sometimes with a random or no `revision` beside it.
    fn republish_cluster(&mut self, inp: &mut Input) {
        let namespace = namespace_of(&self.config);
        let metadata = if inp.ratio(1, 4) {
            self.metadata.clone()
        } else {
            metadata_bytes(inp, &namespace)
        };
        let name = if inp.ratio(1, 8) {
            None
        } else if inp.ratio(3, 4) {
            self.cluster.clone()
        } else {
            Some(inp.pick(CLUSTERS).to_string())
        };
        self.set_cluster(name, metadata);
        if inp.ratio(1, 3) {
            let value = if inp.bool() {
                None
            } else {
                Some(inp.bytes(4).to_vec())
            };
            self.set_prop(
                &[
                    "xds",
                    "cluster_metadata",
                    "filter_metadata",
                    &namespace,
                    "revision",
                ],
                value,
            );
        }
        self.sync_router();
    }

    /// A new plugin configuration (the old one or new bytes), sometimes
    /// with new node labels, then `on_configure`.
    fn reconfigure(&mut self, inp: &mut Input) {
        if inp.ratio(1, 4) {
            // A node locality change takes effect on the next configure.
            let labels = gen::labels(inp);
            for (k, v) in &labels {
                self.set_prop(
                    &["xds", "node", "metadata", "LABELS", k],
                    Some(v.as_bytes().to_vec()),
                );
            }
        }
        self.config = if inp.ratio(1, 4) {
            self.config.clone()
        } else {
            config_bytes(inp)
        };
        self.configure();
    }

    /// A tick of the hand-driven VM.
    fn manual_tick(&mut self) {
        let mut host = self.sim.host_with(&self.props, &self.config);
        self.manual.on_tick(&mut host);
    }

    /// Envoy's host set: the inventories' addresses plus one the filter never knows.
    fn addresses(&self) -> Vec<String> {
        let mut a: Vec<String> = self.known.iter().map(|(a, _)| a.clone()).collect();
        a.push(DECOY.to_string());
        a
    }

    fn set_upstream(&mut self, inp: &mut Input) {
        let addresses = self.addresses();
        let address = addresses[inp.below(addresses.len())].clone();
        let behavior = match inp.below(6) {
            0 | 1 => Behavior::Healthy,
            2 => Behavior::Refused,
            3 => Behavior::Http(503),
            4 => Behavior::Http(inp.pick(&[500, 502, 504, 404, 0, 999])),
            _ => Behavior::Http(inp.u16()),
        };
        self.sim.upstreams.insert(address, behavior);
    }

    /// The header the filter currently steers with (its default before any
    /// configuration was accepted).
    fn steering_header(&self) -> String {
        self.sim
            .root(0)
            .and_then(FilterRoot::settings)
            .map(|s| s.steering.header.clone())
            .unwrap_or_else(|| DEFAULT_OVERRIDE_HEADER.to_string())
    }

    fn client_headers(&self, inp: &mut Input) -> Vec<(String, String)> {
        let addresses = self.addresses();
        let mut out = Vec::new();
        for _ in 0..inp.below(4) {
            let name = match inp.below(8) {
                0..=2 => self.steering_header(),
                3 => DEFAULT_OVERRIDE_HEADER.to_string(),
                4 => DEFAULT_ORIGINAL_DST_HEADER.to_string(),
                5 => DEFAULT_ROUTE_HEADER.to_string(),
                6 => self.steering_header().to_ascii_uppercase(),
                _ => inp.string(16),
            };
            let pick = |inp: &mut Input| addresses[inp.below(addresses.len())].clone();
            let value = match inp.below(8) {
                0 => pick(inp),
                1 => format!("envoy://connect_originate/{}", pick(inp)),
                2 => "10.66.66.66:80".to_string(),
                3 => format!("{},{}", pick(inp), "10.66.66.66:80"),
                4 => inp.pick(gen::BACKENDS).to_string(),
                5 => String::new(),
                _ => inp.string(32),
            };
            out.push((name, value));
        }
        out
    }

    fn request(&mut self, inp: &mut Input) {
        let headers = self.client_headers(inp);
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let outcome = self.sim.request(&refs);
        let Some(value) = &outcome.steering else {
            return;
        };
        if outcome.attempts.is_empty() {
            // A local reply: nothing reached the router.
            return;
        }
        let Some(root) = self.sim.root(outcome.worker) else {
            return;
        };
        self.check_steering(root, value, &headers, "sim");
    }

    /// The invariant: a steering value that reaches the router was written
    /// by the filter, from the inventory it serves. A VM whose
    /// configuration was never accepted writes nothing and drops the
    /// default steering headers (the router then reads a default one).
    fn check_steering(
        &self,
        root: &FilterRoot,
        value: &str,
        headers: &[(String, String)],
        who: &str,
    ) {
        let Some(settings) = root.settings() else {
            panic!(
                "{who}: steering header {value:?} reached the router though the filter has no accepted configuration; client headers {headers:?}"
            );
        };
        let routed = match &settings.inventory {
            InventorySource::Config(_) => Some(CONFIG_CLUSTER.to_string()),
            InventorySource::ClusterMetadata { .. } | InventorySource::Envoy(_) => self
                .props
                .get(&prop_key(&["xds", "cluster_name"]))
                .and_then(|b| String::from_utf8(b.clone()).ok()),
        };
        // A declared cluster (`inventory.cluster`) steers from its own
        // inventory until a check sees the route elsewhere (at most a tick).
        let declared = match &settings.inventory {
            InventorySource::Config(_) => None,
            _ => settings.declared_cluster.clone(),
        };
        let engines: Vec<_> = [routed.clone(), declared.clone()]
            .into_iter()
            .flatten()
            .filter_map(|k| root.engine(&k))
            .collect();
        if engines.is_empty() {
            panic!(
                "{who}: steering header {value:?} reached the router, but the filter serves no inventory for cluster {routed:?} (declared {declared:?}); client headers {headers:?}"
            );
        }
        let prefix = &settings.steering.address_prefix;
        let ok = engines.iter().any(|engine| {
            let inv = engine.inventory();
            match settings.steering.mode {
                SteeringMode::OverrideHost => {
                    let mut used = Vec::new();
                    made_of(value, prefix, inv, &mut used)
                        && used.len() <= settings.steering.max_hosts
                }
                SteeringMode::OriginalDst => inv
                    .endpoints()
                    .iter()
                    .any(|e| value == format!("{prefix}{}", e.address)),
                SteeringMode::RouteHeader => inv
                    .endpoints()
                    .iter()
                    .any(|e| e.backend.as_deref() == Some(value)),
                SteeringMode::StatefulSession => inv.endpoints().iter().any(|e| {
                    locality_failover::session::decode(value)
                        == Some(format!("{prefix}{}", e.address))
                }),
            }
        });
        if !ok {
            panic!(
                "{who}: steering header {value:?} reached the router but is not made of the inventory ({:?} mode, prefix {prefix:?}, inventories {:?}); client headers {headers:?}",
                settings.steering.mode,
                engines
                    .iter()
                    .map(|e| e.inventory().endpoints().iter().map(|e| &e.address).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            );
        }
    }

    fn advance(&mut self, inp: &mut Input) {
        let wanted = match inp.below(8) {
            0 => Duration::from_millis(1),
            1 => Duration::from_millis(100),
            2 => Duration::from_secs(1),
            3 => Duration::from_secs(10),
            4 => Duration::from_secs(31),
            5 => Duration::from_secs(181),
            6 => Duration::from_secs(3600),
            _ => Duration::from_millis(u64::from(inp.u16()) * 10),
        };
        // The filter ticks every interval/10 (10 ms to 1 s); keep the number
        // of ticks one input costs bounded.
        let period = self
            .sim
            .root(0)
            .and_then(FilterRoot::settings)
            .and_then(|s| s.policy.outlier.as_ref())
            .map(|o| (o.interval / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)))
            .unwrap_or(Duration::from_secs(1));
        let workers = self.sim.workers() as u64;
        let left = TICK_BUDGET.saturating_sub(self.ticks) / workers;
        let by = wanted.min(period * u32::try_from(left).unwrap_or(u32::MAX));
        self.ticks += workers * (by.as_nanos() / period.as_nanos().max(1)) as u64 + workers;
        self.sim.advance(by);
    }

    fn manual_request(&mut self, inp: &mut Input) {
        let headers = self.client_headers(inp);
        // The header the router reads: the configured one, or (no accepted
        // configuration) any of the defaults.
        let names: Vec<String> = match self.manual.settings() {
            Some(s) => vec![s.steering.header.clone()],
            None => [
                DEFAULT_OVERRIDE_HEADER,
                DEFAULT_ORIGINAL_DST_HEADER,
                DEFAULT_ROUTE_HEADER,
            ]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        };
        let (state, written, local) = {
            let mut host = self.sim.host_with(&self.props, &self.config);
            for (k, v) in &headers {
                host.headers.insert(k.to_ascii_lowercase(), v.clone());
            }
            let state = self.manual.on_request_headers(&mut host);
            let written: Vec<String> = names
                .iter()
                .filter_map(|h| host.headers.get(h).cloned())
                .collect();
            (state, written, host.local_reply.is_some())
        };
        if !local {
            for value in &written {
                self.check_steering(&self.manual, value, &headers, "manual VM");
            }
        }
        if let Some(s) = state {
            if self.pending.len() >= 16 {
                self.pending.remove(0);
            }
            self.pending.push(s);
        }
    }

    /// `on_log` for a request of the hand-driven VM, with arbitrary
    /// response properties.
    fn manual_log(&mut self, inp: &mut Input) {
        if self.pending.is_empty() {
            return;
        }
        let state = self.pending.remove(inp.below(self.pending.len()));
        let prefix = self
            .manual
            .settings()
            .map(|s| s.steering.address_prefix.clone())
            .unwrap_or_default();
        let mut host = self.sim.host_with(&self.props, &self.config);
        match inp.below(6) {
            0 => {}
            1 => host.set_response_property(&["response", "code"], inp.bytes(9).to_vec()),
            _ => {
                let code: i64 =
                    inp.pick(&[200, 503, 502, 504, 500, 0, -1, 70_000, i64::MAX, i64::MIN]);
                host.set_response_property(&["response", "code"], code.to_le_bytes().to_vec());
            }
        }
        match inp.below(6) {
            0 => {}
            1 => host.set_response_property(&["response", "flags"], inp.bytes(9).to_vec()),
            _ => {
                let f = [
                    0,
                    flags::UPSTREAM_CONNECTION_FAILURE,
                    flags::UPSTREAM_REQUEST_TIMEOUT,
                    flags::NO_HEALTHY_UPSTREAM,
                    flags::UPSTREAM_RETRY_LIMIT_EXCEEDED | flags::UPSTREAM_CONNECTION_FAILURE,
                    flags::UPSTREAM_REMOTE_RESET,
                    flags::DOWNSTREAM_CONNECTION_TERMINATION,
                    u64::MAX,
                ];
                host.set_response_property(
                    &["response", "flags"],
                    inp.pick(&f).to_le_bytes().to_vec(),
                );
            }
        }
        match inp.below(6) {
            0 => {}
            1 => host.set_response_property(&["upstream", "address"], inp.bytes(24).to_vec()),
            2 => host.set_response_property(&["upstream", "address"], DECOY.as_bytes().to_vec()),
            _ if !self.manual.request_addresses(&state).is_empty() => {
                let list = self.manual.request_addresses(&state);
                let a = list[inp.below(list.len())].clone();
                let v = if inp.bool() {
                    format!("{prefix}{a}")
                } else {
                    a
                };
                host.set_response_property(&["upstream", "address"], v.into_bytes());
            }
            _ => {}
        }
        match inp.below(6) {
            0 => {}
            1 => host.set_response_property(
                &["upstream", "request_attempt_count"],
                inp.bytes(9).to_vec(),
            ),
            _ => {
                let n: u64 = inp.pick(&[0, 1, 2, 3, 4, 17]);
                host.set_response_property(
                    &["upstream", "request_attempt_count"],
                    n.to_le_bytes().to_vec(),
                );
            }
        }
        self.manual.on_log(&mut host, &state);
    }

    /// Another process (or a crashed write) leaves a shared key corrupt.
    fn corrupt_shared(&mut self, inp: &mut Input) {
        let Some(settings) = self.sim.root(0).and_then(FilterRoot::settings) else {
            return;
        };
        let cluster = match &settings.inventory {
            InventorySource::Config(_) => CONFIG_CLUSTER.to_string(),
            InventorySource::ClusterMetadata { .. } | InventorySource::Envoy(_) => {
                self.cluster.clone().unwrap_or_default()
            }
        };
        let base = format!("{}/{}", settings.shared_prefix, cluster);
        let addresses = self.addresses();
        let address = addresses[inp.below(addresses.len())].clone();
        let (key, value) = match inp.below(4) {
            0 => (format!("{base}/epoch"), inp.bytes(12).to_vec()),
            1 => (format!("{base}/streak/{address}"), inp.bytes(16).to_vec()),
            2 => (format!("{base}/table"), inp.bytes(64).to_vec()),
            _ => {
                // Well-formed, with plausible values.
                let now = self.sim.now();
                let table = serde_json::json!({
                    "generation": inp.u16(),
                    "next_sweep": inp.pick(&[0, 1, now, now.saturating_add(1_000_000_000)]),
                    "hosts": {
                        address.clone(): {
                            "ejected": inp.bool(),
                            "ejected_at": inp.pick(&[0, now, now.saturating_sub(60_000_000_000)]),
                            "backoff": inp.below(8),
                            "ejections": inp.below(8),
                        }
                    }
                });
                (
                    format!("{base}/table"),
                    serde_json::to_vec(&table).unwrap_or_default(),
                )
            }
        };
        lock(&self.sim.shared).put(&key, &value);
    }
}

/// `value` is `prefix+address` entries of `inv`, comma-separated, no duplicates.
fn made_of(value: &str, prefix: &str, inv: &Inventory, used: &mut Vec<String>) -> bool {
    for e in inv.endpoints() {
        if used.contains(&e.address) {
            continue;
        }
        let piece = format!("{prefix}{}", e.address);
        let Some(rest) = value.strip_prefix(piece.as_str()) else {
            continue;
        };
        used.push(e.address.clone());
        if rest.is_empty() {
            return true;
        }
        if let Some(rest) = rest.strip_prefix(',') {
            if made_of(rest, prefix, inv, used) {
                return true;
            }
        }
        used.pop();
    }
    false
}
