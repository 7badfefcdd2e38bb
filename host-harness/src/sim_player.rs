//! `--mode sim`: a scenario played on the simulated host. The inventory is
//! published as cluster metadata (the path a real control plane uses), the
//! client's labels as the node's, so the filter learns both as it would in
//! Envoy.

use std::collections::BTreeSet;
use std::time::Duration;

use locality_failover::config::{InventorySource, Settings, SteeringMode};
use locality_failover::metadata::metadata_for;

use crate::error::{HarnessError, Result};
use crate::runner::{Player, Traffic};
use crate::scenario::{EndpointState, Scenario};
use crate::sim::{Behavior, RetryPolicy, RouterSteering, SimEnvoy};

/// Cluster name the simulated router routes to.
pub const CLUSTER: &str = "outbound|8000||in-ambient.httpbin.mesh.internal";

pub struct SimPlayer {
    scenario: Scenario,
    pub envoy: SimEnvoy,
    settings: Settings,
    present: BTreeSet<String>,
    revision: u64,
}

impl SimPlayer {
    pub fn new(scenario: &Scenario) -> Result<SimPlayer> {
        let bytes = scenario.plugin_config().to_string().into_bytes();
        let settings = scenario.settings.clone();
        if let InventorySource::Envoy(_) = settings.inventory {
            return Err(HarnessError::Unsupported {
                field: "inventory.source".into(),
                value: "envoy".into(),
                reason: "the sim mode publishes the inventory as cluster metadata (use clusterMetadata or config)".into(),
            });
        }
        let steering = match settings.steering.mode {
            SteeringMode::OverrideHost => RouterSteering::OverrideHost {
                header: settings.steering.header.clone(),
                prefix: settings.steering.address_prefix.clone(),
            },
            SteeringMode::StatefulSession => RouterSteering::StatefulSession {
                header: settings.steering.header.clone(),
                prefix: settings.steering.address_prefix.clone(),
            },
            SteeringMode::OriginalDst => RouterSteering::OriginalDst {
                header: settings.steering.header.clone(),
                prefix: settings.steering.address_prefix.clone(),
            },
            SteeringMode::RouteHeader => RouterSteering::RouteHeader {
                header: settings.steering.header.clone(),
                backends: scenario
                    .endpoints
                    .iter()
                    .map(|e| (e.name.clone(), vec![e.address.clone()]))
                    .collect(),
            },
        };
        let mut envoy = SimEnvoy::new(
            scenario.workers,
            &scenario.client_labels,
            bytes,
            scenario.seed,
            steering,
        );
        envoy.retry = scenario.retries.as_ref().map(|r| RetryPolicy {
            attempts: r.attempts,
            retry_on: r.retry_on.clone(),
        });
        for e in &scenario.endpoints {
            envoy.upstreams.insert(e.address.clone(), Behavior::Healthy);
        }
        let mut player = SimPlayer {
            scenario: scenario.clone(),
            envoy,
            settings,
            present: scenario.endpoints.iter().map(|e| e.name.clone()).collect(),
            revision: 0,
        };
        player.publish();
        if !player.envoy.configure() {
            return Err(HarnessError::Unsupported {
                field: "config".into(),
                value: scenario.plugin_config().to_string(),
                reason: "the filter refused the configuration".into(),
            });
        }
        Ok(player)
    }

    /// The inventory as the control plane would publish it now.
    pub fn inventory_json(
        scenario: &Scenario,
        present: &BTreeSet<String>,
        revision: u64,
    ) -> serde_json::Value {
        let endpoints: Vec<serde_json::Value> = scenario
            .endpoints
            .iter()
            .filter(|e| present.contains(&e.name))
            .map(|e| {
                serde_json::json!({
                    "address": e.address,
                    "name": e.name,
                    "labels": e.labels,
                    "weight": e.weight,
                    "backend": e.name,
                })
            })
            .collect();
        serde_json::json!({"revision": revision.to_string(), "endpoints": endpoints})
    }

    fn namespace(&self) -> String {
        match &self.settings.inventory {
            InventorySource::ClusterMetadata { namespace } => namespace.clone(),
            InventorySource::Config(_) | InventorySource::Envoy(_) => {
                locality_failover::config::DEFAULT_METADATA_NAMESPACE.to_string()
            }
        }
    }

    fn publish(&mut self) {
        self.revision += 1;
        let ns = self.namespace();
        let inventory = Self::inventory_json(&self.scenario, &self.present, self.revision);
        let hosts = self
            .scenario
            .endpoints
            .iter()
            .filter(|e| self.present.contains(&e.name))
            .map(|e| e.address.clone())
            .collect();
        self.envoy
            .set_cluster(CLUSTER, metadata_for(&ns, &inventory), hosts);
        self.envoy.set_property(
            &[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                &ns,
                "revision",
            ],
            Some(self.revision.to_string().into_bytes()),
        );
    }

    fn name_of(&self, address: &str) -> String {
        self.scenario
            .endpoints
            .iter()
            .find(|e| e.address == address)
            .map(|e| e.name.clone())
            .unwrap_or_else(|| address.to_string())
    }
}

impl Player for SimPlayer {
    fn begin_step(&mut self, index: usize) -> Result<()> {
        self.envoy.pinned_worker = Some(index % self.envoy.workers());
        Ok(())
    }

    fn apply(&mut self, set: &[(String, EndpointState)]) -> Result<()> {
        let upstreams = &mut self.envoy.upstreams;
        let changed = self
            .scenario
            .apply_set(&mut self.present, set, |e, state| {
                if let Some(behavior) = state.behavior() {
                    upstreams.insert(e.address.clone(), behavior);
                }
                Ok(())
            })?;
        if changed {
            self.publish();
            // A worker re-reads the inventory's revision at most this often:
            // the new inventory is certain to be seen only after it.
            self.envoy
                .advance(locality_failover::filter::REVISION_REFRESH);
        }
        Ok(())
    }

    fn advance(&mut self, by: Duration) {
        self.envoy.advance(by);
    }

    fn requests(&mut self, n: u32) -> Result<Traffic> {
        let mut traffic = Traffic::default();
        for _ in 0..n {
            let outcome = self.envoy.request(&[]);
            let names = outcome.attempts.iter().map(|a| self.name_of(a));
            traffic.attempts.extend(names);
            traffic.client_errors += u64::from(outcome.status >= 500);
        }
        Ok(traffic)
    }

    fn ejected(&mut self) -> Vec<String> {
        let prefix = self.settings.shared_prefix.clone();
        let cluster = match self.settings.inventory {
            InventorySource::ClusterMetadata { .. } | InventorySource::Envoy(_) => CLUSTER,
            InventorySource::Config(_) => locality_failover::filter::CONFIG_CLUSTER,
        };
        let mut names: Vec<String> = self
            .envoy
            .ejected(&prefix, cluster)
            .iter()
            .map(|a| self.name_of(a))
            .collect();
        names.sort();
        names
    }
}
