//! The three ways of playing a scenario, behind one entry point.

use std::path::PathBuf;
use std::str::FromStr;

use locality_failover::config::InventorySource;
use locality_failover::inventory::{EndpointSpec, Inventory};
use locality_failover::ranking::rank;

use crate::error::{HarnessError, Result};
use crate::runner::{self, Mismatch, StepResult};
use crate::scenario::{Scenario, ScenarioEndpoint};
use crate::sim_player::SimPlayer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The filter's code on the simulated host.
    #[default]
    Sim,
    /// The compiled `.wasm` in a real Envoy.
    Envoy,
    /// Envoy's own load balancer and outlier detector, no filter.
    Native,
    /// The `.wasm` on a waypoint-shaped Envoy made from istiod's golden xDS.
    Waypoint,
}

impl FromStr for Mode {
    type Err = HarnessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sim" => Ok(Mode::Sim),
            "envoy" => Ok(Mode::Envoy),
            "native" => Ok(Mode::Native),
            "waypoint" => Ok(Mode::Waypoint),
            other => Err(HarnessError::Usage(format!("unknown mode {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub mode: Mode,
    /// Factor applied to every duration in real-time modes.
    pub time_scale: Option<f64>,
    /// The filter to load in `envoy` mode.
    pub wasm: Option<PathBuf>,
    /// Overrides the scenario's `workers`.
    pub workers: Option<usize>,
    /// `--declare`: play the scenario with the declarations that save host
    /// calls ([`declare`]); sim and envoy modes.
    pub declare: bool,
}

pub fn play(scenario: &Scenario, options: &RunOptions) -> Result<(Vec<StepResult>, Vec<Mismatch>)> {
    let mut scenario = scenario.clone();
    if let Some(w) = options.workers {
        scenario.workers = w;
    }
    if options.declare {
        if !matches!(options.mode, Mode::Sim | Mode::Envoy) {
            return Err(HarnessError::Usage(
                "--declare applies to the sim and envoy modes (the filter on a plain Envoy)".into(),
            ));
        }
        declare(&mut scenario)?;
    }
    match options.mode {
        Mode::Sim => {
            let mut player = SimPlayer::new(&scenario)?;
            runner::play(&scenario, &mut player)
        }
        Mode::Envoy | Mode::Native => crate::real::play(&scenario, options),
        Mode::Waypoint => crate::waypoint::play(&scenario, options),
    }
}

/// Adds to the scenario's plugin configuration what a filter whose every
/// route goes to one cluster, on a route with
/// `include_attempt_count_in_response` (as the harness's Envoy configs and
/// the simulated router have), may declare: `steering.attemptCount:
/// responseHeader` and, unless the inventory is inline, `inventory.cluster`.
/// The scenario's expectations must hold unchanged.
pub fn declare(scenario: &mut Scenario) -> Result<()> {
    let mut steering = scenario
        .config
        .get("steering")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    steering["attemptCount"] = serde_json::json!("responseHeader");
    scenario.set_config("steering", steering)?;
    if !matches!(scenario.settings.inventory, InventorySource::Config(_)) {
        let mut inventory = scenario
            .config
            .get("inventory")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        inventory["cluster"] = serde_json::json!(crate::sim_player::CLUSTER);
        scenario.set_config("inventory", inventory)?;
    }
    Ok(())
}

/// Each endpoint's priority for the scenario's client, as the filter ranks
/// it (and as the native mode programs Envoy's EDS priorities).
pub fn ranking(scenario: &Scenario) -> Result<Vec<(String, u32)>> {
    let settings = &scenario.settings;
    let specs: Vec<EndpointSpec> = scenario
        .endpoints
        .iter()
        .map(ScenarioEndpoint::spec)
        .collect();
    let inventory = Inventory::from_specs(&specs)?;
    let ranking = rank(
        &settings.policy.ranking,
        &scenario.client_labels,
        &inventory,
    );
    Ok(scenario
        .endpoints
        .iter()
        .zip(&ranking.priority)
        .filter_map(|(e, p)| p.map(|p| (e.name.clone(), p)))
        .collect())
}
