//! `--mode envoy`: the compiled filter in a real Envoy. The inventory is the
//! cluster metadata of a CDS-file cluster (rewritten on `removed` /
//! `present`), the client's labels are the node's, so the filter learns
//! both as it does under Istio.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use locality_failover::config::{
    InventorySource, Settings, SteeringMode, DEFAULT_METADATA_NAMESPACE,
};
use serde_json::Value;

use crate::envoy::config::METADATA_NAMESPACE;
use crate::envoy::{
    Endpoint, FilterModeConfig, Frontend, Layout, Node, RetryPolicy, Steering, Upstreams,
    WasmFilter,
};
use crate::modes::RunOptions;
use crate::runner::Player;
use crate::scenario::{EndpointState, Scenario};
use crate::sim_player::CLUSTER;

use super::rig::{Outcome, Rig, XDS_TIMEOUT};

/// Where `make build` puts the filter.
pub const DEFAULT_WASM: &str = "build/locality_failover.wasm";

pub struct FilterPlayer {
    rig: Rig,
    scenario: Scenario,
    cfg: FilterModeConfig,
    present: BTreeSet<String>,
    revision: u64,
    /// Cluster name as the filter sees it (`xds.cluster_name`).
    cluster: String,
    log_offset: u64,
    ejected: BTreeSet<String>,
    /// Ejections the filter logged without an address, that could not be
    /// tied to one failing endpoint of the request that caused them.
    unnamed: u64,
    /// Filter log events not applied yet, with the index (in the step) of
    /// the request after which they were read.
    events: Vec<(usize, FilterEvent)>,
    /// Requests of the current step sent so far.
    request_in_step: usize,
}

/// The filter: `--wasm`, else `build/locality_failover.wasm` in the current
/// directory or in the workspace.
pub fn wasm_path(options: &RunOptions) -> Result<PathBuf, String> {
    if let Some(p) = &options.wasm {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("--wasm {}: no such file", p.display()))
        };
    }
    let here = PathBuf::from(DEFAULT_WASM);
    if here.is_file() {
        return Ok(here);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_WASM);
    if workspace.is_file() {
        return Ok(workspace);
    }
    Err(format!(
        "{DEFAULT_WASM} not found: run `make build` first (or pass --wasm PATH)"
    ))
}

/// Replaces each inline inventory endpoint's scenario address (an
/// `inventory.endpoints` list in the plugin configuration) with the address
/// of its loopback upstream, matched by name, else by scenario address.
fn rewrite_inline_inventory(
    config: &mut Value,
    scenario: &Scenario,
    upstreams: &Upstreams,
) -> Result<(), String> {
    let Some(list) = config
        .pointer_mut("/inventory/endpoints")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for e in list.iter_mut() {
        let by_name = e
            .get("name")
            .and_then(Value::as_str)
            .and_then(|n| scenario.endpoint(n));
        let by_addr = e
            .get("address")
            .and_then(Value::as_str)
            .and_then(|a| scenario.endpoints.iter().find(|x| x.address == a));
        let addr = by_name
            .or(by_addr)
            .and_then(|x| upstreams.addr(&x.name))
            .ok_or_else(|| format!("inline inventory entry {e} is not a scenario endpoint"))?;
        e["address"] = Value::String(addr.to_string());
    }
    Ok(())
}

impl FilterPlayer {
    /// `plugin_config` is the scenario's plugin configuration with its
    /// durations already scaled.
    pub fn start(
        scenario: &Scenario,
        options: &RunOptions,
        mut plugin_config: Value,
        scale: f64,
    ) -> Result<FilterPlayer, String> {
        let wasm = wasm_path(options)?;
        let settings = Settings::from_bytes(plugin_config.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        if !settings.steering.address_prefix.is_empty() {
            return Err(format!(
                "steering.addressPrefix {:?}: the envoy mode's clusters take plain ip:port",
                settings.steering.address_prefix
            ));
        }
        if let InventorySource::ClusterMetadata { namespace } = &settings.inventory {
            if namespace != METADATA_NAMESPACE {
                return Err(format!(
                    "inventory.namespace {namespace:?}: the envoy mode publishes the inventory under {DEFAULT_METADATA_NAMESPACE:?}"
                ));
            }
        }
        let steering = match settings.steering.mode {
            SteeringMode::OverrideHost => Steering::OverrideHost {
                header: settings.steering.header.clone(),
            },
            SteeringMode::OriginalDst => Steering::OriginalDst {
                header: settings.steering.header.clone(),
            },
            SteeringMode::RouteHeader => Steering::RouteHeader {
                header: settings.steering.header.clone(),
            },
            SteeringMode::StatefulSession => {
                return Err("steering.mode stateful-session: the envoy mode's generated Envoy has no stateful_session filter".into())
            }
        };
        if let InventorySource::Envoy(_) = settings.inventory {
            return Err("inventory.source envoy: the envoy mode publishes the inventory as cluster metadata".into());
        }
        let (upstreams, dir) = Rig::upstreams(scenario, "envoy")?;
        let endpoints: Vec<Endpoint> = scenario
            .endpoints
            .iter()
            .map(|e| {
                let addr = upstreams
                    .addr(&e.name)
                    .ok_or_else(|| format!("no upstream for endpoint {}", e.name))?;
                let mut ep = Endpoint::new(e.name.clone(), addr).with_weight(e.weight);
                ep.labels = e.labels.clone();
                Ok(ep)
            })
            .collect::<Result<_, String>>()?;
        let mut cfg = FilterModeConfig::new(steering, endpoints);
        cfg.cluster_name = CLUSTER.to_string();
        cfg.node = Node::with_labels(scenario.client_labels.clone());
        cfg.retry = scenario
            .retries
            .as_ref()
            .map(|r| RetryPolicy::new(r.attempts, r.retry_on.join(",")));
        cfg.frontend = Frontend {
            exact_balance: true,
            ..Frontend::default()
        };
        cfg.revision = "1".into();
        rewrite_inline_inventory(&mut plugin_config, scenario, &upstreams)?;
        cfg.wasm = Some(WasmFilter::new(wasm, plugin_config.to_string()));
        let generated = cfg.generate(&Layout::new(dir.path()));
        let rig = Rig::start(scenario, "envoy", upstreams, dir, &generated, scale)?;
        Ok(FilterPlayer {
            rig,
            scenario: scenario.clone(),
            cfg,
            present: scenario.endpoints.iter().map(|e| e.name.clone()).collect(),
            revision: 1,
            // The filter keys an inline (configuration) inventory under a
            // cluster name of its own, as the simulated host reads it.
            cluster: match settings.inventory {
                InventorySource::ClusterMetadata { .. } | InventorySource::Envoy(_) => {
                    CLUSTER.to_string()
                }
                InventorySource::Config(_) => locality_failover::filter::CONFIG_CLUSTER.to_string(),
            },
            log_offset: 0,
            ejected: BTreeSet::new(),
            unnamed: 0,
            events: Vec::new(),
            request_in_step: 0,
        })
    }

    /// Rewrites the CDS file with the present endpoints (in the cluster and
    /// in the metadata inventory) and a new revision; waits until applied.
    fn publish(&mut self) -> Result<(), String> {
        self.revision += 1;
        let mut endpoints = Vec::new();
        for e in &self.scenario.endpoints {
            if self.present.contains(&e.name) {
                let mut ep =
                    Endpoint::new(e.name.clone(), self.rig.addr(&e.name)?).with_weight(e.weight);
                ep.labels = e.labels.clone();
                endpoints.push(ep);
            }
        }
        self.cfg.endpoints = endpoints;
        self.cfg.revision = self.revision.to_string();
        self.rig
            .envoy
            .apply_clusters(&self.cfg.clusters(), XDS_TIMEOUT)
            .map_err(|e| format!("CDS update: {e}"))?;
        Ok(())
    }

    /// Reads the filter's new log lines; their events wait in `events`,
    /// tagged with the request just sent, until [`Self::resolve`].
    fn read_filter_log(&mut self) {
        let (text, next) = self.rig.envoy_log_since(self.log_offset);
        self.log_offset = next;
        let tag = self.request_in_step;
        for event in filter_events(&text, &self.cluster) {
            self.events.push((tag, event));
        }
    }

    /// Applies the waiting events in order. An ejection line without an
    /// address is tied to the endpoint that failed in the request it was
    /// read after, when exactly one did (`outcomes` of the step's requests).
    fn resolve(&mut self, outcomes: &[Outcome]) {
        for (request, event) in std::mem::take(&mut self.events) {
            match event {
                FilterEvent::Ejected(Some(addr)) => {
                    self.ejected.insert(self.rig.name_of(&addr));
                }
                FilterEvent::Ejected(None) => {
                    let failed: BTreeSet<&String> = outcomes
                        .get(request)
                        .map(|o| o.failed.iter().collect())
                        .unwrap_or_default();
                    match (failed.len(), failed.first()) {
                        (1, Some(a)) => {
                            let name = self.rig.name_of(a);
                            self.ejected.insert(name);
                        }
                        _ => self.unnamed += 1,
                    }
                }
                FilterEvent::Returned(addr) => {
                    self.ejected.remove(&self.rig.name_of(&addr));
                }
            }
        }
    }
}

/// What the filter logs about ejections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterEvent {
    /// `<cluster>: ejected ...` (address unknown) or `<cluster>: <addr> ejected ...`.
    Ejected(Option<String>),
    /// `<cluster>: <addr> returns from ejection`.
    Returned(String),
}

/// The filter's ejection events for `cluster` in Envoy log text, in order.
pub fn filter_events(text: &str, cluster: &str) -> Vec<FilterEvent> {
    let needle = format!("locality-failover: {cluster}: ");
    let is_addr = |s: &str| s.parse::<std::net::SocketAddr>().is_ok();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(pos) = line.find(&needle) else {
            continue;
        };
        let rest = line[pos + needle.len()..].trim();
        if let Some(addr) = rest.strip_suffix(" returns from ejection") {
            if is_addr(addr) {
                out.push(FilterEvent::Returned(addr.to_string()));
            }
            continue;
        }
        let mut words = rest.split_whitespace();
        match (words.next(), words.next()) {
            (Some("ejected"), Some(a)) if is_addr(a.trim_end_matches([',', ':', ';'])) => {
                out.push(FilterEvent::Ejected(Some(
                    a.trim_end_matches([',', ':', ';']).to_string(),
                )));
            }
            (Some("ejected"), _) => out.push(FilterEvent::Ejected(None)),
            (Some(a), Some("ejected")) if is_addr(a) => {
                out.push(FilterEvent::Ejected(Some(a.to_string())))
            }
            _ => {}
        }
    }
    out
}

impl Player for FilterPlayer {
    fn begin_step(&mut self, index: usize) {
        self.rig.begin_step(index);
        self.read_filter_log();
        self.resolve(&[]);
        self.request_in_step = 0;
    }

    fn apply(&mut self, set: &[(String, EndpointState)]) -> Result<(), String> {
        let rig = &mut self.rig;
        let changed = self
            .scenario
            .apply_set(&mut self.present, set, |e, state| {
                rig.set_upstream(&e.name, state)
            })?;
        if changed {
            self.publish()?;
        }
        Ok(())
    }

    fn advance(&mut self, by: Duration) {
        self.rig.advance(by);
    }

    /// The step's attempts are all returned with its last request (the
    /// runner only adds them up).
    fn request(&mut self) -> Result<(Vec<String>, bool), String> {
        let error = self.rig.send()?;
        // The filter logs an ejection in the request's on_log, which runs
        // before the answer leaves Envoy: tag it with this request.
        self.read_filter_log();
        self.request_in_step += 1;
        if !self.rig.step_complete() {
            return Ok((Vec::new(), error));
        }
        let outcomes = self.rig.collect()?;
        self.resolve(&outcomes);
        Ok((
            outcomes.into_iter().flat_map(|o| o.attempts).collect(),
            error,
        ))
    }

    fn ejected(&mut self) -> Vec<String> {
        self.read_filter_log();
        self.resolve(&[]);
        self.ejected.iter().cloned().collect()
    }
}

impl FilterPlayer {
    /// Ejections seen in the log that could not be tied to an endpoint.
    pub fn unnamed_ejections(&self) -> u64 {
        self.unnamed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_filter_log_lines() {
        let c = "outbound|8000||svc";
        let log = format!(
            "[x][info][wasm] wasm log locality_failover: locality-failover: {c}: ejected after consecutive failures\n\
             [x][info][wasm] wasm log: locality-failover: {c}: 127.0.0.2:8080 ejected after consecutive failures\n\
             [x][info][wasm] locality-failover: {c}: ejected 127.0.0.3:80 ([Consecutive5xx])\n\
             [x][info][wasm] locality-failover: {c}: 127.0.0.2:8080 returns from ejection\n\
             [x][info][wasm] locality-failover: other: 127.0.0.9:1 returns from ejection\n"
        );
        assert_eq!(
            filter_events(&log, c),
            vec![
                FilterEvent::Ejected(None),
                FilterEvent::Ejected(Some("127.0.0.2:8080".into())),
                FilterEvent::Ejected(Some("127.0.0.3:80".into())),
                FilterEvent::Returned("127.0.0.2:8080".into()),
            ]
        );
    }
}
