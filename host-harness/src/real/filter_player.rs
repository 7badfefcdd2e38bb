//! `--mode envoy`: the compiled filter in a real Envoy. The inventory is the
//! cluster metadata of a CDS-file cluster (rewritten on `removed` /
//! `present`), the client's labels are the node's, so the filter learns
//! both as it does under Istio.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
use crate::error::{HarnessError, Result};
use crate::modes::RunOptions;
use crate::scenario::Scenario;
use crate::sim_player::CLUSTER;

use super::player::RealEnvoy;
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
pub fn wasm_path(options: &RunOptions) -> Result<PathBuf> {
    if let Some(p) = &options.wasm {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(HarnessError::Missing {
                what: format!("--wasm {}", p.display()),
                hint: "no such file".into(),
            })
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
    Err(HarnessError::Missing {
        what: DEFAULT_WASM.into(),
        hint: "run `make build` first (or pass --wasm PATH)".into(),
    })
}

/// Replaces each inline inventory endpoint's scenario address (an
/// `inventory.endpoints` list in the plugin configuration) with the address
/// of its loopback upstream, matched by name, else by scenario address.
fn rewrite_inline_inventory(
    config: &mut Value,
    scenario: &Scenario,
    upstreams: &Upstreams,
) -> Result<()> {
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
            .ok_or_else(|| {
                HarnessError::unknown(
                    "scenario endpoint for the inline inventory entry",
                    e.to_string(),
                )
            })?;
        e["address"] = Value::String(addr.to_string());
    }
    Ok(())
}

/// The steering the envoy mode generates for `settings`; what it cannot
/// play (an address prefix, another metadata namespace, stateful sessions,
/// an inventory read from Envoy) is refused, naming the field.
fn envoy_mode_steering(settings: &Settings) -> Result<Steering> {
    if !settings.steering.address_prefix.is_empty() {
        return Err(HarnessError::Unsupported {
            field: "steering.addressPrefix".into(),
            value: format!("{:?}", settings.steering.address_prefix),
            reason: "the envoy mode's clusters take plain ip:port".into(),
        });
    }
    if let InventorySource::ClusterMetadata { namespace } = &settings.inventory {
        if namespace != METADATA_NAMESPACE {
            return Err(HarnessError::Unsupported {
                field: "inventory.namespace".into(),
                value: format!("{namespace:?}"),
                reason: format!(
                    "the envoy mode publishes the inventory under {DEFAULT_METADATA_NAMESPACE:?}"
                ),
            });
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
            return Err(HarnessError::Unsupported {
                field: "steering.mode".into(),
                value: "stateful-session".into(),
                reason: "the envoy mode's generated Envoy has no stateful_session filter (--mode waypoint has)".into(),
            })
        }
    };
    if let InventorySource::Envoy(_) = settings.inventory {
        return Err(HarnessError::Unsupported {
            field: "inventory.source".into(),
            value: "envoy".into(),
            reason: "the envoy mode publishes the inventory as cluster metadata (--mode waypoint reads it from Envoy)".into(),
        });
    }
    Ok(steering)
}

/// The generated Envoy's configuration, all but the filter: the scenario's
/// endpoints at their loopback upstreams, the client's labels as the
/// node's, its retries, and a frontend that balances connections exactly.
fn filter_mode_config(
    scenario: &Scenario,
    steering: Steering,
    upstreams: &Upstreams,
) -> Result<FilterModeConfig> {
    let endpoints: Vec<Endpoint> = scenario
        .endpoints
        .iter()
        .map(|e| {
            let addr = upstreams
                .addr(&e.name)
                .ok_or_else(|| HarnessError::unknown("upstream for endpoint", &e.name))?;
            let mut ep = Endpoint::new(e.name.clone(), addr).with_weight(e.weight);
            ep.labels = e.labels.clone();
            Ok(ep)
        })
        .collect::<Result<_>>()?;
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
    Ok(cfg)
}

impl FilterPlayer {
    /// `plugin_config` is the scenario's plugin configuration with its
    /// durations already scaled, and `settings` what the filter reads in it.
    pub fn start(
        scenario: &Scenario,
        options: &RunOptions,
        mut plugin_config: Value,
        settings: &Settings,
        scale: f64,
    ) -> Result<FilterPlayer> {
        let wasm = wasm_path(options)?;
        let steering = envoy_mode_steering(settings)?;
        let (upstreams, dir) = Rig::upstreams(scenario, "envoy")?;
        let mut cfg = filter_mode_config(scenario, steering, &upstreams)?;
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
        })
    }

    /// Rewrites the CDS file with the present endpoints (in the cluster and
    /// in the metadata inventory) and a new revision; waits until applied
    /// and then one [`REVISION_REFRESH`](locality_failover::filter::REVISION_REFRESH).
    fn publish(&mut self) -> Result<()> {
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
            .map_err(HarnessError::envoy("CDS update"))?;
        // A worker re-reads the inventory's revision at most this often:
        // the new inventory is certain to be seen only after it.
        std::thread::sleep(locality_failover::filter::REVISION_REFRESH);
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

impl RealEnvoy for FilterPlayer {
    fn parts(&mut self) -> (&Scenario, &mut BTreeSet<String>, &mut Rig) {
        (&self.scenario, &mut self.present, &mut self.rig)
    }

    fn publish(&mut self) -> Result<()> {
        FilterPlayer::publish(self)
    }

    fn observe(&mut self) {
        self.read_filter_log();
    }

    fn ejected_now(&mut self) -> Vec<String> {
        self.ejected.iter().cloned().collect()
    }
}
