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
use locality_failover::logline;
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

use super::rig::{Rig, XDS_TIMEOUT};

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
    /// Endpoint names the filter's log says are ejected now.
    ejected: BTreeSet<String>,
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
        };
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
                InventorySource::ClusterMetadata { .. } => CLUSTER.to_string(),
                InventorySource::Config(_) => locality_failover::filter::CONFIG_CLUSTER.to_string(),
            },
            log_offset: 0,
            ejected: BTreeSet::new(),
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

    /// Applies the filter's new log lines ([`logline`]) for this cluster to
    /// the ejected set, in log order.
    fn read_filter_log(&mut self) {
        let (text, next) = self.rig.envoy_log_since(self.log_offset);
        self.log_offset = next;
        for event in text.lines().filter_map(logline::parse) {
            match event {
                logline::Event::Ejected { cluster, address } if cluster == self.cluster => {
                    self.ejected.insert(self.rig.name_of(address));
                }
                logline::Event::Returned { cluster, address } if cluster == self.cluster => {
                    self.ejected.remove(&self.rig.name_of(address));
                }
                _ => {}
            }
        }
    }
}

impl Player for FilterPlayer {
    fn begin_step(&mut self, index: usize) {
        self.rig.begin_step(index);
        self.read_filter_log();
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
        if !self.rig.step_complete() {
            return Ok((Vec::new(), error));
        }
        let outcomes = self.rig.collect()?;
        self.read_filter_log();
        Ok((
            outcomes.into_iter().flat_map(|o| o.attempts).collect(),
            error,
        ))
    }

    fn ejected(&mut self) -> Vec<String> {
        self.read_filter_log();
        self.ejected.iter().cloned().collect()
    }
}
